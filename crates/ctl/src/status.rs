//! `oprelay status [--watch]`: one table per account and feed, from what the services record.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use time::OffsetDateTime;

use oprelay_bus::async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use oprelay_bus::{header_value, Bus, JsonKv};
use oprelay_events::names::{self, header};
use oprelay_events::{AccountName, Alarm, AlarmState, CursorState, Feed, FeedStatus};
use serde::Serialize;

use crate::output::{json, table, Output};

fn ago(t: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let s = (now - t).whole_seconds().max(0);
            match s {
                0..=119 => format!("{s}s ago"),
                120..=7199 => format!("{}m ago", s / 60),
                _ => format!("{}h ago", s / 3600),
            }
        }
    }
}

async fn keys(kv: &JsonKv) -> Vec<String> {
    match kv.store().keys().await {
        Ok(k) => k.filter_map(|k| async move { k.ok() }).collect().await,
        Err(_) => Vec::new(),
    }
}

/// Events delivered to `op.events.{account}.{feed}` in the last hour, from the batches'
/// `Oprelay-Count` headers (bodies are not fetched).
async fn events_last_hour(bus: &Bus, subject: &str, now: OffsetDateTime) -> Option<u64> {
    let stream = bus
        .jetstream()
        .get_stream(names::STREAM_EVENTS)
        .await
        .ok()?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy: DeliverPolicy::ByStartTime {
                start_time: now - Duration::from_secs(3600),
            },
            headers_only: true,
            ..Default::default()
        })
        .await
        .ok()?;
    let mut messages = consumer.messages().await.ok()?;
    let mut total = 0u64;
    // An hour with no batch ends the stream's wait after half a second.
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(Duration::from_millis(500), messages.next()).await
    {
        total += header_value(m.headers.as_ref(), header::COUNT)
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        if m.info().map(|i| i.pending == 0).unwrap_or(true) {
            break;
        }
    }
    Some(total)
}

/// What `oprelay status` reports; `--output json` prints it as is.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub feeds: Vec<FeedReport>,
    pub sinks: Vec<SinkReport>,
    pub open_alarms: Vec<Alarm>,
}

/// One account and feed, from its cursor, the fetcher's status row and `OP_EVENTS`.
#[derive(Debug, Serialize)]
pub struct FeedReport {
    /// `{account}.{feed}`, the key in `OP_CURSORS`.
    pub feed: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cursor_updated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_poll_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_event_at: Option<OffsetDateTime>,
    pub events_last_hour: Option<u64>,
    pub consecutive_failures: Option<u32>,
    pub last_error: Option<String>,
}

/// One sink's consumer on `OP_EVENTS`.
#[derive(Debug, Serialize)]
pub struct SinkReport {
    pub sink: String,
    /// Records not yet acknowledged by the sink: waiting plus in flight.
    pub backlog: u64,
    /// The stream sequence everything up to which the sink has acknowledged.
    pub delivered_through: u64,
}

pub async fn collect(bus: &Bus) -> anyhow::Result<Report> {
    let now = OffsetDateTime::now_utc();
    Ok(Report {
        at: now,
        feeds: feeds(bus, now).await?,
        sinks: sinks(bus).await,
        open_alarms: open_alarms(bus).await?,
    })
}

/// Every feed with a cursor or a status row.
async fn feeds(bus: &Bus, now: OffsetDateTime) -> anyhow::Result<Vec<FeedReport>> {
    let cursors = JsonKv::open(bus, names::BUCKET_CURSORS).await?;
    let status = JsonKv::open(bus, names::BUCKET_STATUS).await?;
    let mut feed_keys: BTreeSet<(AccountName, Feed)> = keys(&cursors)
        .await
        .iter()
        .filter_map(|k| names::parse_feed_key(k))
        .collect();
    for k in keys(&status).await {
        if let Some(feed) = names::parse_fetch_status_key(&k) {
            feed_keys.insert(feed);
        }
    }
    let mut feeds = Vec::new();
    for (account, feed) in feed_keys {
        let c = cursors
            .get::<CursorState>(&names::feed_key(&account, feed))
            .await
            .ok()
            .flatten()
            .map(|v| v.value);
        let s = status
            .get::<FeedStatus>(&names::fetch_status_key(&account, feed))
            .await
            .ok()
            .flatten()
            .map(|v| v.value);
        let subject = names::events_subject(&account, feed);
        let events_last_hour = events_last_hour(bus, &subject, now).await;
        feeds.push(FeedReport {
            cursor_updated_at: c.map(|c| c.updated_at),
            last_poll_at: s.as_ref().and_then(|s| s.last_poll_at),
            last_event_at: s.as_ref().and_then(|s| s.last_event_at),
            events_last_hour,
            consecutive_failures: s.as_ref().map(|s| s.consecutive_failures),
            last_error: s.and_then(|s| s.last_error),
            feed: names::feed_key(&account, feed),
        });
    }

    Ok(feeds)
}

/// Every sink consumer on `OP_EVENTS` and its backlog.
async fn sinks(bus: &Bus) -> Vec<SinkReport> {
    let mut sinks = Vec::new();
    if let Ok(stream) = bus.jetstream().get_stream(names::STREAM_EVENTS).await {
        let mut consumer_names = stream.consumer_names();
        let mut consumers = Vec::new();
        while let Some(Ok(n)) = consumer_names.next().await {
            if names::parse_sink_consumer(&n).is_some() {
                consumers.push(n);
            }
        }
        consumers.sort();
        for n in consumers {
            if let Ok(info) = stream.clone().consumer_info(&n).await {
                sinks.push(SinkReport {
                    sink: names::parse_sink_consumer(&n).unwrap_or(&n).to_owned(),
                    backlog: info.num_pending + info.num_ack_pending as u64,
                    delivered_through: info.ack_floor.stream_sequence,
                });
            }
        }
    }

    sinks
}

/// The alarms in ALARM now.
async fn open_alarms(bus: &Bus) -> anyhow::Result<Vec<Alarm>> {
    let health = JsonKv::open(bus, names::BUCKET_HEALTH).await?;
    // Alarm records are the published `Alarm` plus healthwatch's own bookkeeping.
    let mut open_alarms = Vec::new();
    for k in keys(&health).await {
        if let Ok(Some(v)) = health.get::<Alarm>(&k).await {
            if v.value.state == AlarmState::Alarm {
                open_alarms.push(v.value);
            }
        }
    }
    open_alarms.sort_by(|a, b| (&a.account, a.feed, a.kind).cmp(&(&b.account, b.feed, b.kind)));
    Ok(open_alarms)
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The report as tables.
pub fn text(r: &Report) -> String {
    let mut out = format!(
        "oprelay status at {}\n\n",
        oprelay_events::format_rfc3339_nanos(r.at)
            .split('.')
            .next()
            .unwrap_or_default()
    );
    out.push_str(&table(
        [
            "ACCOUNT.FEED",
            "CURSOR",
            "LAST POLL",
            "LAST EVENT",
            "EVENTS/1H",
            "FAILURES",
            "LAST ERROR",
        ],
        r.feeds.iter().map(|f| {
            [
                f.feed.clone(),
                ago(f.cursor_updated_at, r.at),
                ago(f.last_poll_at, r.at),
                ago(f.last_event_at, r.at),
                or_dash(f.events_last_hour),
                or_dash(f.consecutive_failures),
                f.last_error.clone().unwrap_or_default(),
            ]
        }),
    ));
    if r.feeds.is_empty() {
        out.push_str("(no feed has been polled yet: is the fetcher running?)\n");
    }
    out.push('\n');
    out.push_str(&table(
        ["SINK", "BACKLOG", "DELIVERED"],
        r.sinks.iter().map(|s| {
            [
                s.sink.clone(),
                s.backlog.to_string(),
                s.delivered_through.to_string(),
            ]
        }),
    ));
    out.push_str("\nOPEN ALARMS\n");
    if r.open_alarms.is_empty() {
        out.push_str("none\n");
    } else {
        out.push_str(&table(
            ["SCOPE", "KIND", "SINCE", "MESSAGE"],
            r.open_alarms.iter().map(|a| {
                let scope = a.scope().map_or_else(|| a.account.clone(), |s| s.tokens());
                [
                    scope,
                    a.kind.to_string(),
                    ago(Some(a.since), r.at),
                    a.message.clone(),
                ]
            }),
        ));
    }
    out
}

async fn render(bus: &Bus, output: Output) -> anyhow::Result<String> {
    let report = collect(bus).await?;
    match output {
        Output::Text => Ok(text(&report)),
        Output::Json => json(&report),
    }
}

/// Once, or every 2 seconds until Ctrl-C: redrawn tables, or one JSON document per line.
pub async fn run(bus: &Bus, watch: bool, output: Output) -> anyhow::Result<()> {
    if !watch {
        print!("{}", render(bus, output).await?);
        return Ok(());
    }
    loop {
        let report = collect(bus).await?;
        match output {
            // Clear the screen and draw from the top.
            Output::Text => print!(
                "\x1b[2J\x1b[H{}\n(refreshing every 2 s; Ctrl-C to stop)\n",
                text(&report)
            ),
            Output::Json => println!("{}", serde_json::to_string(&report)?),
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
