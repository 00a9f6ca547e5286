//! One evaluation round: read what the pipeline records, run every rule, store what changed.
//!
//! The inputs are read once, before any rule runs ([`Inputs::read`]); each rule then runs
//! against its stored record ([`Evaluator::apply`]), and a state change is stored with
//! compare-and-set and published to `op.alarms.…`.

use oprelay_bus::{Bus, BusError, JsonKv, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{AccountName, AlarmKind, AlarmScope, Feed, FeedStatus};
use oprelay_service::config::HealthwatchConfig;
use oprelay_service::{Clock, Config};
use time::OffsetDateTime;

use crate::alarm::{AlarmRecord, Observation};
use crate::metrics::HealthwatchMetrics;
use crate::rules::sink_stalled::Backlog;
use crate::rules::{self, fetch_failing, Newest};

/// What one feed looked like this round.
struct FeedInputs {
    account: AccountName,
    feed: Feed,
    newest: Option<Newest>,
    status: Option<FeedStatus>,
}

/// Everything a round looks at.
struct Inputs {
    feeds: Vec<FeedInputs>,
    /// Each configured sink and its consumer's position (`None`: no consumer yet).
    sinks: Vec<(String, Option<Backlog>)>,
    /// The DLQ's last sequence; `None` when the stream could not be read.
    dlq_last: Option<u64>,
}

impl Inputs {
    async fn read(bus: &Bus, status: &JsonKv, config: &Config) -> Result<Inputs, BusError> {
        let js = bus.jetstream();
        let events = js
            .get_stream(names::STREAM_EVENTS)
            .await
            .map_err(|e| BusError::Kv {
                op: "read",
                bucket: names::STREAM_EVENTS.into(),
                key: String::new(),
                source: Box::new(e),
            })?;
        let mut feeds = Vec::new();
        for (account, feed) in watched_feeds(config) {
            let newest = events
                .get_last_raw_message_by_subject(&names::events_subject(&account, feed))
                .await
                .ok()
                .map(|m| Newest {
                    sequence: m.sequence,
                    stored_at: m.time,
                });
            let status = status
                .get::<FeedStatus>(&names::fetch_status_key(&account, feed))
                .await?
                .map(|v| v.value);
            feeds.push(FeedInputs {
                account,
                feed,
                newest,
                status,
            });
        }
        let mut sinks = Vec::new();
        for sink in &config.sinks {
            let info = events
                .consumer_info(&names::sink_consumer(&sink.name))
                .await;
            let backlog = info.ok().map(|info| Backlog {
                waiting: info.num_pending + info.num_ack_pending as u64,
                delivered: info.ack_floor.stream_sequence,
            });
            sinks.push((sink.name.clone(), backlog));
        }
        let dlq_last = match js.get_stream(names::STREAM_DLQ).await {
            Ok(mut dlq) => dlq.info().await.ok().map(|i| i.state.last_sequence),
            Err(_) => None,
        };
        Ok(Inputs {
            feeds,
            sinks,
            dlq_last,
        })
    }
}

/// The (account, feed) pairs the configuration says should produce events.
fn watched_feeds(config: &Config) -> Vec<(AccountName, Feed)> {
    config
        .accounts
        .iter()
        .flat_map(|a| {
            a.feeds
                .clone()
                .unwrap_or_else(|| Feed::ALL.to_vec())
                .into_iter()
                .map(move |f| (a.name.clone(), f))
        })
        .collect()
}

/// The configured thresholds, as the rules take them.
struct Thresholds {
    token_warning: time::Duration,
    fetch: fetch_failing::Limits,
    sink_stalled: time::Duration,
}

impl Thresholds {
    fn of(hw: &HealthwatchConfig) -> Thresholds {
        let convert =
            |d: std::time::Duration, fallback| time::Duration::try_from(d).unwrap_or(fallback);
        Thresholds {
            token_warning: convert(hw.token_expiry_warning.0, time::Duration::WEEK),
            fetch: fetch_failing::Limits {
                failures: hw.fetch_failures,
                silence: convert(hw.fetch_silence.0, time::Duration::HOUR),
            },
            sink_stalled: convert(hw.sink_stalled_after.0, time::Duration::minutes(15)),
        }
    }
}

/// What a round needs besides its inputs.
pub(crate) struct Evaluator {
    pub bus: Bus,
    pub config: Config,
    pub health: JsonKv,
    pub status: JsonKv,
    pub clock: Clock,
    pub metrics: HealthwatchMetrics,
}

impl Evaluator {
    /// One round over every feed, sink and the DLQ.
    pub async fn round(&self) -> Result<(), BusError> {
        let inputs = Inputs::read(&self.bus, &self.status, &self.config).await?;
        let hw = &self.config.healthwatch;
        let limits = Thresholds::of(hw);
        for f in &inputs.feeds {
            let scope = AlarmScope::Feed {
                account: f.account.clone(),
                feed: f.feed,
            };
            let what = format!("{}/{}", f.account, f.feed);
            let status = f.status.as_ref();
            let window = time::Duration::try_from(hw.dropoff_for(f.account.as_str(), f.feed))
                .unwrap_or(time::Duration::DAY);
            self.apply(AlarmKind::Dropoff, &scope, |r, now| {
                rules::dropoff::judge(
                    &mut r.progress,
                    f.newest,
                    r.watching_since,
                    window,
                    now,
                    &what,
                )
            })
            .await?;
            self.apply(AlarmKind::TokenRejected, &scope, |_, _| {
                rules::token_rejected::judge(status, &what)
            })
            .await?;
            self.apply(AlarmKind::TokenExpiring, &scope, |_, now| {
                rules::token_expiring::judge(status, limits.token_warning, now, &what)
            })
            .await?;
            self.apply(AlarmKind::FetchFailing, &scope, |_, now| {
                rules::fetch_failing::judge(status, limits.fetch, now, &what)
            })
            .await?;
        }
        for (sink, backlog) in &inputs.sinks {
            let scope = AlarmScope::Sink(sink.clone());
            self.apply(AlarmKind::SinkStalled, &scope, |r, now| {
                rules::sink_stalled::judge(
                    &mut r.progress,
                    *backlog,
                    limits.sink_stalled,
                    now,
                    sink,
                )
            })
            .await?;
        }
        if let Some(last) = inputs.dlq_last {
            self.apply(AlarmKind::DlqGrowing, &AlarmScope::DeadLetters, |r, now| {
                rules::dlq_growing::judge(&mut r.progress, last, now)
            })
            .await?;
        }
        Ok(())
    }

    /// Runs one rule against its stored record; stores the record if it changed and publishes
    /// a state change to `op.alarms.…`.
    async fn apply(
        &self,
        kind: AlarmKind,
        scope: &AlarmScope,
        rule: impl FnOnce(&mut AlarmRecord, OffsetDateTime) -> Observation,
    ) -> Result<(), BusError> {
        let key = names::alarm_key(kind, scope);
        let now = self.clock.now();
        let stored = self.health.get::<AlarmRecord>(&key).await?;
        let mut record = match &stored {
            Some(v) => v.value.clone(),
            None => AlarmRecord::new(kind, scope, now),
        };
        let seen = rule(&mut record, now);
        let change = record.apply(seen, now);
        self.metrics
            .set_state(kind, scope.tokens(), record.alarm.state);
        // An unchanged record rewritten every round would make the notifier's compare-and-set
        // lose to the evaluator again and again.
        if stored.as_ref().is_some_and(|s| s.value == record) {
            return Ok(());
        }
        let revision = stored.map(|s| s.revision);
        match self.health.compare_and_set(&key, &record, revision).await {
            Ok(_) => {}
            // Another evaluator (a lease hand-over) wrote first; the next round re-reads.
            Err(BusError::Conflict { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        let Some(alarm) = change else {
            return Ok(());
        };
        tracing::info!(kind = %alarm.kind, %scope, state = ?alarm.state, message = %alarm.message, "alarm state changed");
        let body = serde_json::to_vec(&alarm).unwrap_or_default();
        let dedup_id = format!(
            "alarm:{}:{:?}:{}",
            alarm.id,
            alarm.state,
            now.unix_timestamp_nanos()
        );
        let mut msg = Outgoing::new(names::alarm_subject(scope), dedup_id, body)
            .header(header::ACCOUNT, &alarm.account)
            .header(header::SCHEMA, names::schema::ALARM);
        if let Some(f) = alarm.feed {
            msg = msg.header(header::FEED, f);
        }
        self.bus.publish(msg).await?;
        Ok(())
    }
}
