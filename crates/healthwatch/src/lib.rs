//! healthwatch: drop-off and pipeline alarms, one notification on entering ALARM and one on
//! resolving, whatever restarts in between.
//!
//! Each round the lease holder looks at what the pipeline itself records — the newest message
//! per `op.events.{account}.{feed}` subject, the fetcher's `OP_STATUS`, each sink consumer's
//! backlog and the DLQ — turns it into an OK / ALARM / INSUFFICIENT_DATA state per alarm, keeps
//! the states in `OP_HEALTH`, and publishes every change to `op.alarms.…`. A separate task
//! delivers the notifications the states owe.

pub mod alarm;
pub mod notify;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use time::OffsetDateTime;

use oprelay_bus::{Bus, BusError, JsonKv, Need, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{AlarmKind, AlarmState, Feed, FeedStatus, Lease};
use oprelay_service::{CancellationToken, Clock, Config, Metrics, StartError};

use crate::alarm::{dropoff, AlarmRecord, Observation};
use crate::notify::Notifier;

pub const SERVICE: &str = "healthwatch";
/// What healthwatch watches and writes to; checked at start.
const NEEDS: [Need; 6] = [
    Need::Stream(names::STREAM_EVENTS),
    Need::Stream(names::STREAM_DLQ),
    Need::Stream(names::STREAM_ALARMS),
    Need::Bucket(names::BUCKET_HEALTH),
    Need::Bucket(names::BUCKET_STATUS),
    Need::Bucket(names::BUCKET_LEASES),
];
pub const DEFAULT_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9464);
/// The lease that makes one replica the evaluator.
const LEASE_KEY: &str = "_healthwatch";
/// The DLQ alarm resolves after this long without a new dead letter.
const DLQ_QUIET: time::Duration = time::Duration::HOUR;

#[derive(Debug, thiserror::Error)]
pub enum HealthwatchError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("healthwatch.notify: {0}")]
    Notify(String),
}

#[derive(Clone, Default)]
pub struct Options {
    pub clock: Clock,
    /// This replica's name in the lease; `HOSTNAME` or random by default.
    pub replica_id: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabels {
    kind: String,
    scope: String,
}

#[derive(Clone)]
struct HwMetrics {
    state: Family<AlarmLabels, Gauge>,
    evaluation: Histogram,
}

struct Ctx {
    bus: Bus,
    config: Config,
    health: JsonKv,
    status: JsonKv,
    clock: Clock,
    metrics: HwMetrics,
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), HealthwatchError> {
    run_with(config, Options::default(), shutdown).await
}

pub async fn run_with(
    config: Config,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), HealthwatchError> {
    let notifiers: Vec<Notifier> = config
        .healthwatch
        .notify
        .iter()
        .enumerate()
        .map(|(i, n)| Notifier::new(i, n))
        .collect::<Result<_, _>>()
        .map_err(HealthwatchError::Notify)?;
    let metrics = Metrics::new();
    let m = HwMetrics {
        state: Family::default(),
        evaluation: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
    };
    metrics.register(
        "healthwatch_alarm_state",
        "Alarm state per kind and scope: 0 OK, 1 ALARM, 2 INSUFFICIENT_DATA",
        m.state.clone(),
    );
    metrics.register(
        "healthwatch_evaluation_seconds",
        "Time to evaluate every alarm once",
        m.evaluation.clone(),
    );
    let Some(started) =
        oprelay_service::start(&config, SERVICE, &NEEDS, DEFAULT_LISTEN, metrics, &shutdown)
            .await?
    else {
        return Ok(());
    };
    let bus = started.bus;
    let ctx = Arc::new(Ctx {
        health: JsonKv::open(&bus, names::BUCKET_HEALTH).await?,
        status: JsonKv::open(&bus, names::BUCKET_STATUS).await?,
        bus: bus.clone(),
        clock: options.clock.clone(),
        config,
        metrics: m,
    });
    let leases = JsonKv::open(&bus, names::BUCKET_LEASES).await?;
    let me = options
        .replica_id
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("healthwatch-{:08x}", rand::random::<u32>()));
    let interval = ctx.config.healthwatch.interval.0;
    let notify_task = tokio::spawn(notify_loop(
        ctx.clone(),
        notifiers,
        me.clone(),
        leases.clone(),
        shutdown.clone(),
    ));
    loop {
        if holds_lease(&leases, &me, &ctx.clock, interval * 3).await {
            let t0 = std::time::Instant::now();
            if let Err(e) = evaluate(&ctx).await {
                tracing::warn!(error = %e, "evaluation round failed");
            }
            ctx.metrics.evaluation.observe(t0.elapsed().as_secs_f64());
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ctx.clock.sleep(interval) => {}
        }
    }
    let _ = notify_task.await;
    // Hand the lease over at once.
    if let Ok(Some(l)) = leases.get::<Lease>(LEASE_KEY).await {
        if l.value.owner == me {
            let _ = leases.store().delete(LEASE_KEY).await;
        }
    }
    tracing::info!("healthwatch stopped");
    Ok(())
}

/// Claims or renews the single evaluator lease with compare-and-set.
async fn holds_lease(kv: &JsonKv, me: &str, clock: &Clock, ttl: Duration) -> bool {
    let now = clock.now();
    let lease = Lease {
        owner: me.to_owned(),
        expires_at: now + ttl,
    };
    let current = match kv.get::<Lease>(LEASE_KEY).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the healthwatch lease");
            return false;
        }
    };
    let mine = current.as_ref().is_some_and(|c| c.value.owner == me);
    let free = current.as_ref().is_none_or(|c| c.value.expires_at <= now);
    if !(mine || free) {
        return false;
    }
    match kv
        .compare_and_set(LEASE_KEY, &lease, current.map(|c| c.revision))
        .await
    {
        Ok(_) => true,
        Err(BusError::Conflict { .. }) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim the healthwatch lease");
            false
        }
    }
}

/// The (account, feed) pairs the configuration says should produce events.
fn feeds(config: &Config) -> Vec<(String, Feed)> {
    config
        .accounts
        .iter()
        .flat_map(|a| {
            a.feeds
                .clone()
                .unwrap_or_else(|| Feed::ALL.to_vec())
                .into_iter()
                .map(move |f| (a.name.to_string(), f))
        })
        .collect()
}

/// A record as it was read from `OP_HEALTH`, so that `save` writes only what changed: an
/// unchanged record rewritten every round would make the notifier's compare-and-set lose to
/// the evaluator again and again.
struct Stored {
    revision: u64,
    value: AlarmRecord,
}

async fn load(
    ctx: &Ctx,
    kind: AlarmKind,
    account: &str,
    feed: Option<Feed>,
) -> Result<(AlarmRecord, Option<Stored>), BusError> {
    let fresh = AlarmRecord::new(kind, account, feed, ctx.clock.now());
    match ctx.health.get::<AlarmRecord>(&fresh.key()).await? {
        Some(v) => Ok((
            v.value.clone(),
            Some(Stored {
                revision: v.revision,
                value: v.value,
            }),
        )),
        None => Ok((fresh, None)),
    }
}

/// Stores the record and, on a state change, publishes it to `op.alarms.…`.
async fn save(
    ctx: &Ctx,
    mut record: AlarmRecord,
    stored: Option<Stored>,
    seen: Observation,
) -> Result<(), BusError> {
    let now = ctx.clock.now();
    let change = record.apply(seen, now);
    let value = match record.alarm.state {
        AlarmState::Ok => 0,
        AlarmState::Alarm => 1,
        AlarmState::InsufficientData => 2,
    };
    ctx.metrics
        .state
        .get_or_create(&AlarmLabels {
            kind: record.alarm.kind.to_string(),
            scope: record.scope(),
        })
        .set(value);
    if stored.as_ref().is_some_and(|s| s.value == record) {
        return Ok(());
    }
    match ctx
        .health
        .compare_and_set(&record.key(), &record, stored.map(|s| s.revision))
        .await
    {
        Ok(_) => {}
        // Another evaluator (a lease hand-over) wrote first; the next round re-reads.
        Err(BusError::Conflict { .. }) => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(alarm) = change {
        tracing::info!(kind = %alarm.kind, scope = %record.scope(), state = ?alarm.state, message = %alarm.message, "alarm state changed");
        let subject = format!("op.alarms.{}", record.scope());
        let body = serde_json::to_vec(&alarm).unwrap_or_default();
        let mut msg = Outgoing::new(
            subject,
            format!(
                "alarm:{}:{:?}:{}",
                alarm.id,
                alarm.state,
                now.unix_timestamp_nanos()
            ),
            body,
        )
        .header(header::ACCOUNT, &record.alarm.account)
        .header(header::SCHEMA, names::schema::ALARM);
        if let Some(f) = record.alarm.feed {
            msg = msg.header(header::FEED, f);
        }
        ctx.bus.publish(msg).await?;
    }
    Ok(())
}

async fn evaluate(ctx: &Ctx) -> Result<(), BusError> {
    let hw = &ctx.config.healthwatch;
    let now = ctx.clock.now();
    let events = ctx
        .bus
        .jetstream()
        .get_stream(names::STREAM_EVENTS)
        .await
        .map_err(|e| BusError::Kv {
            op: "read",
            bucket: names::STREAM_EVENTS.into(),
            key: String::new(),
            source: Box::new(e),
        })?;
    for (account, feed) in feeds(&ctx.config) {
        let what = format!("{account}/{feed}");
        // Drop-off: the arrival of the newest batch, as healthwatch saw its sequence change.
        let (mut rec, stored) = load(ctx, AlarmKind::Dropoff, &account, Some(feed)).await?;
        let subject = format!("op.events.{account}.{feed}");
        if let Ok(last) = events.get_last_raw_message_by_subject(&subject).await {
            if rec.progress != Some(last.sequence) {
                // A first sight after a restart takes the stored time; a new one is "now".
                let arrived = if rec.progress.is_none() {
                    last.time.min(now)
                } else {
                    now
                };
                rec.progress = Some(last.sequence);
                rec.progress_at = Some(arrived);
            }
        }
        let seen = dropoff(
            rec.progress_at,
            rec.watching_since,
            hw.dropoff_for(&account, feed),
            now,
            &what,
        );
        save(ctx, rec, stored, seen).await?;

        let status = ctx
            .status
            .get::<FeedStatus>(&format!("fetch.{account}.{feed}"))
            .await?
            .map(|v| v.value);
        // Token rejected.
        let (rec, stored) = load(ctx, AlarmKind::TokenRejected, &account, Some(feed)).await?;
        let seen = match &status {
            None => Observation {
                state: AlarmState::InsufficientData,
                message: format!("{what}: the fetcher has not reported yet"),
                last_event_at: None,
            },
            Some(s) => match &s.last_error {
                Some(e) if is_token_problem(s.error_kind.as_deref(), e) => Observation {
                    state: AlarmState::Alarm,
                    message: format!("{what}: {e}"),
                    last_event_at: s.last_event_at,
                },
                _ => Observation {
                    state: AlarmState::Ok,
                    message: format!("{what}: token accepted"),
                    last_event_at: s.last_event_at,
                },
            },
        };
        save(ctx, rec, stored, seen).await?;
        // Token expiring.
        let (rec, stored) = load(ctx, AlarmKind::TokenExpiring, &account, Some(feed)).await?;
        let warn =
            time::Duration::try_from(hw.token_expiry_warning.0).unwrap_or(time::Duration::WEEK);
        let seen = match status.as_ref().and_then(|s| s.token_expires_at) {
            Some(exp) if exp - now < warn => Observation {
                state: AlarmState::Alarm,
                message: format!("{what}: the token expires at {exp}"),
                last_event_at: None,
            },
            _ => Observation {
                state: AlarmState::Ok,
                message: format!("{what}: the token is not about to expire"),
                last_event_at: None,
            },
        };
        save(ctx, rec, stored, seen).await?;
        // Fetch failing.
        let (rec, stored) = load(ctx, AlarmKind::FetchFailing, &account, Some(feed)).await?;
        let silence = time::Duration::try_from(hw.fetch_silence.0).unwrap_or(time::Duration::HOUR);
        let seen = match &status {
            None => Observation {
                state: AlarmState::InsufficientData,
                message: format!("{what}: the fetcher has not reported yet"),
                last_event_at: None,
            },
            Some(s) => {
                // A fetcher that never succeeded is judged by its failure count alone: its
                // first failed poll is not yet a silence.
                let stale = s.last_success_at.is_some_and(|t| now - t > silence);
                if s.consecutive_failures >= hw.fetch_failures || stale {
                    Observation {
                        state: AlarmState::Alarm,
                        message: format!(
                            "{what}: {} failed polls in a row; last error: {}",
                            s.consecutive_failures,
                            s.last_error.as_deref().unwrap_or("none")
                        ),
                        last_event_at: s.last_event_at,
                    }
                } else {
                    Observation {
                        state: AlarmState::Ok,
                        message: format!("{what}: polling"),
                        last_event_at: s.last_event_at,
                    }
                }
            }
        };
        save(ctx, rec, stored, seen).await?;
    }

    // Sinks: a backlog that does not move.
    for sink in &ctx.config.sinks {
        let scope = format!("pipeline.sink-{}", sink.name);
        let (mut rec, stored) = load(ctx, AlarmKind::SinkStalled, &scope, None).await?;
        let consumer_name = names::sink_consumer(&sink.name);
        let info = events.consumer_info(&consumer_name).await;
        let seen = match info {
            Err(_) => Observation {
                state: AlarmState::InsufficientData,
                message: format!(
                    "sink {}: no consumer yet (is the forwarder running?)",
                    sink.name
                ),
                last_event_at: None,
            },
            Ok(info) => {
                let backlog = info.num_pending + info.num_ack_pending as u64;
                let delivered = info.ack_floor.stream_sequence;
                // `progress_at` is when the sink last moved while something was waiting;
                // none while nothing waits, so an idle sink's record stays unchanged and a
                // backlog after a quiet night is not mistaken for a night-long stall.
                if backlog == 0 {
                    rec.progress = Some(delivered);
                    rec.progress_at = None;
                } else if rec.progress != Some(delivered) || rec.progress_at.is_none() {
                    rec.progress = Some(delivered);
                    rec.progress_at = Some(now);
                }
                let stalled_for = rec.progress_at.map_or(time::Duration::ZERO, |t| now - t);
                let limit = time::Duration::try_from(hw.sink_stalled_after.0)
                    .unwrap_or(time::Duration::minutes(15));
                if backlog > 0 && stalled_for >= limit {
                    Observation {
                        state: AlarmState::Alarm,
                        message: format!(
                            "sink {}: {backlog} messages waiting, nothing delivered for {} min",
                            sink.name,
                            stalled_for.whole_minutes()
                        ),
                        last_event_at: None,
                    }
                } else {
                    Observation {
                        state: AlarmState::Ok,
                        message: format!("sink {}: delivering ({backlog} waiting)", sink.name),
                        last_event_at: None,
                    }
                }
            }
        };
        save(ctx, rec, stored, seen).await?;
    }

    // Dead letters: new ones since the last look.
    if let Ok(mut dlq) = ctx.bus.jetstream().get_stream(names::STREAM_DLQ).await {
        if let Ok(info) = dlq.info().await {
            let last = info.state.last_sequence;
            let (mut rec, stored) = load(ctx, AlarmKind::DlqGrowing, "pipeline.dlq", None).await?;
            let grew = rec.progress.is_some_and(|p| last > p);
            if rec.progress.is_none() || grew {
                rec.progress = Some(last);
                if grew {
                    rec.progress_at = Some(now);
                }
            }
            let recent = rec.progress_at.is_some_and(|t| now - t < DLQ_QUIET);
            let seen = if recent {
                Observation {
                    state: AlarmState::Alarm,
                    message: format!("new dead letters (last sequence {last})"),
                    last_event_at: None,
                }
            } else {
                Observation {
                    state: AlarmState::Ok,
                    message: "no new dead letters".into(),
                    last_event_at: None,
                }
            };
            save(ctx, rec, stored, seen).await?;
        }
    }
    Ok(())
}

/// Records a delivered notification, re-reading on a lost compare-and-set (evaluation may
/// have written the record meanwhile). `None` when it could not be recorded.
async fn mark_notified(
    kv: &JsonKv,
    key: &str,
    notifier: &str,
    id: &str,
    what: AlarmState,
) -> Option<(AlarmRecord, u64)> {
    for _ in 0..5 {
        let v = kv.get::<AlarmRecord>(key).await.ok().flatten()?;
        let mut record = v.value;
        if record.alarm.id != id {
            return None;
        }
        record.mark_notified(notifier, what);
        record.claims.remove(notifier);
        match kv.compare_and_set(key, &record, Some(v.revision)).await {
            Ok(rev) => return Some((record, rev)),
            Err(BusError::Conflict { .. }) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not record a delivered notification");
                return None;
            }
        }
    }
    tracing::warn!(%key, "could not record a delivered notification after 5 attempts");
    None
}

/// Delivers what the alarm states owe each notifier, retrying failures with backoff, apart
/// from evaluation. Only the lease holder notifies, so two replicas send one notification.
async fn notify_loop(
    ctx: Arc<Ctx>,
    notifiers: Vec<Notifier>,
    me: String,
    leases: JsonKv,
    shutdown: CancellationToken,
) {
    if notifiers.is_empty() {
        return;
    }
    let mut backoff = vec![Backoff::default(); notifiers.len()];
    let tick = Duration::from_secs(1).min(ctx.config.healthwatch.interval.0);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.clock.sleep(tick) => {}
        }
        let owner = leases.get::<Lease>(LEASE_KEY).await.ok().flatten();
        if owner.is_none_or(|l| l.value.owner != me) {
            continue;
        }
        let keys: Vec<String> = match ctx.health.store().keys().await {
            Ok(k) => {
                use futures::StreamExt;
                k.filter_map(|k| async move { k.ok() }).collect().await
            }
            Err(_) => continue,
        };
        for key in keys {
            // A lost compare-and-set means the evaluator wrote the record meanwhile: read it
            // again at once rather than a tick later, a few times.
            for _ in 0..3 {
                if notify_record(&ctx, &notifiers, &me, &key, &mut backoff).await != Pass::Conflict
                {
                    break;
                }
            }
        }
    }
}

/// One notifier's failures in a row, and when it may try again.
#[derive(Clone, Copy)]
struct Backoff {
    failures: u32,
    next_try: OffsetDateTime,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            failures: 0,
            next_try: OffsetDateTime::UNIX_EPOCH,
        }
    }
}

impl Backoff {
    /// Records a failure at `now`; the wait doubles from 2 s up to 256 s.
    fn failed(&mut self, now: OffsetDateTime) -> Duration {
        self.failures += 1;
        let wait = Duration::from_secs(2u64.pow(self.failures.min(8)));
        self.next_try = now + wait;
        wait
    }
}

#[derive(PartialEq)]
enum Pass {
    Done,
    /// The record changed under us; reading it again may find work.
    Conflict,
}

/// Sends what one alarm record owes each notifier: claim, send, record the delivery.
async fn notify_record(
    ctx: &Ctx,
    notifiers: &[Notifier],
    me: &str,
    key: &str,
    backoff: &mut [Backoff],
) -> Pass {
    let Ok(Some(v)) = ctx.health.get::<AlarmRecord>(key).await else {
        return Pass::Done;
    };
    let (mut record, mut revision) = (v.value, v.revision);
    for (i, n) in notifiers.iter().enumerate() {
        let Some(what) = record.owed(&n.name) else {
            continue;
        };
        let now = ctx.clock.now();
        if now < backoff[i].next_try {
            continue;
        }
        // Claim the delivery first (compare-and-set), so a second replica that also believes
        // it leads cannot send it too.
        let taken = record
            .claims
            .get(&n.name)
            .is_some_and(|c| c.owner != me && c.until > now && c.state == what);
        if taken {
            continue;
        }
        record.claims.insert(
            n.name.clone(),
            alarm::Claim {
                owner: me.to_owned(),
                state: what,
                until: now + Duration::from_secs(60),
            },
        );
        match ctx
            .health
            .compare_and_set(key, &record, Some(revision))
            .await
        {
            Ok(r) => revision = r,
            Err(BusError::Conflict { .. }) => return Pass::Conflict,
            Err(_) => return Pass::Done,
        }
        match n.send(&record, what, now).await {
            Ok(()) => {
                backoff[i].failures = 0;
                tracing::info!(notifier = %n.name, alarm = %record.alarm.id, state = ?what, "notification delivered");
                match mark_notified(&ctx.health, key, &n.name, &record.alarm.id, what).await {
                    Some((r, rev)) => (record, revision) = (r, rev),
                    None => return Pass::Done,
                }
            }
            Err(e) => {
                let wait = backoff[i].failed(now);
                tracing::warn!(error = %e, retry_in = ?wait, "notification failed; will retry");
            }
        }
    }
    Pass::Done
}

/// Whether a fetcher's error is about its token. Fetchers record the error's kind; rows
/// written by fetchers from before the kind existed are judged by their text.
fn is_token_problem(kind: Option<&str>, text: &str) -> bool {
    match kind {
        Some(k) => matches!(
            k,
            "token_rejected" | "token_unreadable" | "token_invalid" | "feed_not_permitted"
        ),
        None => text.starts_with("token rejected") || text.contains("not allowed to read"),
    }
}

#[cfg(test)]
mod token_problem_tests {
    use super::is_token_problem;

    #[test]
    fn the_kind_decides_and_the_text_only_for_old_rows() {
        assert!(is_token_problem(
            Some("token_unreadable"),
            "cannot read the token"
        ));
        assert!(is_token_problem(Some("feed_not_permitted"), "whatever"));
        assert!(!is_token_problem(
            Some("server_error"),
            "token rejected (401)"
        ));
        assert!(is_token_problem(None, "token rejected (401): invalid"));
        assert!(!is_token_problem(None, "HTTP 503"));
    }
}
