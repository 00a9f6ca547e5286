//! `oprelay status [--watch]`: one table per account and feed, from what the services record.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use time::OffsetDateTime;

use oprelay_bus::async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use oprelay_bus::{header_value, Bus, JsonKv};
use oprelay_events::names::{self, header};
use oprelay_events::{AlarmState, CursorState, FeedStatus};

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

pub async fn render(bus: &Bus) -> anyhow::Result<String> {
    let now = OffsetDateTime::now_utc();
    let cursors = JsonKv::open(bus, names::BUCKET_CURSORS).await?;
    let status = JsonKv::open(bus, names::BUCKET_STATUS).await?;
    let health = JsonKv::open(bus, names::BUCKET_HEALTH).await?;

    let mut feeds: BTreeMap<String, ()> = BTreeMap::new();
    for k in keys(&cursors).await {
        feeds.insert(k, ());
    }
    for k in keys(&status).await {
        if let Some(rest) = k.strip_prefix("fetch.") {
            feeds.insert(rest.to_owned(), ());
        }
    }
    let mut open_alarms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in keys(&health).await {
        if let Ok(Some(v)) = health.get::<serde_json::Value>(&k).await {
            let v = v.value;
            if v["state"] == serde_json::json!(AlarmState::Alarm) {
                let scope = match v["feed"].as_str() {
                    Some(f) => format!("{}.{f}", v["account"].as_str().unwrap_or_default()),
                    None => v["account"].as_str().unwrap_or_default().to_owned(),
                };
                open_alarms.entry(scope).or_default().push(format!(
                    "{}: {}",
                    v["kind"].as_str().unwrap_or_default(),
                    v["message"].as_str().unwrap_or_default()
                ));
            }
        }
    }

    let mut out = String::new();
    out.push_str(&format!(
        "oprelay status at {}\n\n",
        oprelay_events::format_rfc3339_nanos(now)
            .split('.')
            .next()
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "{:<28} {:>10} {:>10} {:>12} {:>10} {:>10}  {}\n",
        "ACCOUNT.FEED", "CURSOR", "LAST POLL", "LAST EVENT", "EVENTS/1H", "FAILURES", "LAST ERROR"
    ));
    for feed in feeds.keys() {
        let c = cursors
            .get::<CursorState>(feed)
            .await
            .ok()
            .flatten()
            .map(|v| v.value);
        let s = status
            .get::<FeedStatus>(&format!("fetch.{feed}"))
            .await
            .ok()
            .flatten()
            .map(|v| v.value);
        let events = events_last_hour(bus, &format!("op.events.{feed}"), now).await;
        out.push_str(&format!(
            "{:<28} {:>10} {:>10} {:>12} {:>10} {:>10}  {}\n",
            feed,
            ago(c.as_ref().map(|c| c.updated_at), now),
            ago(s.as_ref().and_then(|s| s.last_poll_at), now),
            ago(s.as_ref().and_then(|s| s.last_event_at), now),
            events.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
            s.as_ref()
                .map(|s| s.consecutive_failures.to_string())
                .unwrap_or_else(|| "-".into()),
            s.as_ref()
                .and_then(|s| s.last_error.clone())
                .unwrap_or_default(),
        ));
    }
    if feeds.is_empty() {
        out.push_str("(no feed has been polled yet: is the fetcher running?)\n");
    }

    out.push_str(&format!(
        "\n{:<28} {:>10} {:>12}\n",
        "SINK", "BACKLOG", "DELIVERED"
    ));
    if let Ok(stream) = bus.jetstream().get_stream(names::STREAM_EVENTS).await {
        let mut names_ = stream.consumer_names();
        let mut sinks = Vec::new();
        while let Some(Ok(n)) = names_.next().await {
            if n.starts_with("sink-") {
                sinks.push(n);
            }
        }
        sinks.sort();
        for n in sinks {
            let s = stream.clone();
            if let Ok(info) = s.consumer_info(&n).await {
                out.push_str(&format!(
                    "{:<28} {:>10} {:>12}\n",
                    n.trim_start_matches("sink-"),
                    info.num_pending + info.num_ack_pending as u64,
                    info.ack_floor.stream_sequence
                ));
            }
        }
    }

    out.push_str("\nOPEN ALARMS\n");
    if open_alarms.is_empty() {
        out.push_str("none\n");
    }
    for (scope, list) in &open_alarms {
        for a in list {
            out.push_str(&format!("{scope:<28} {a}\n"));
        }
    }
    Ok(out)
}

pub async fn run(bus: &Bus, watch: bool) -> anyhow::Result<()> {
    if !watch {
        print!("{}", render(bus).await?);
        return Ok(());
    }
    loop {
        let text = render(bus).await?;
        // Clear the screen and draw from the top.
        print!("\x1b[2J\x1b[H{text}\n(refreshing every 2 s; Ctrl-C to stop)\n");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
