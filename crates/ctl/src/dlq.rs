//! `oprelay dlq …`

use anyhow::{bail, Context};

use oprelay_bus::async_nats::jetstream::message::StreamMessage;
use oprelay_bus::{header_value, Bus, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::AccountName;

struct Letter {
    seq: u64,
    msg: StreamMessage,
}

impl Letter {
    fn header(&self, name: &str) -> &str {
        header_value(Some(&self.msg.headers), name).unwrap_or("-")
    }
}

async fn letters(bus: &Bus, stage: Option<&str>, limit: usize) -> anyhow::Result<Vec<Letter>> {
    let mut stream = bus
        .jetstream()
        .get_stream(names::STREAM_DLQ)
        .await
        .context("opening OP_DLQ")?;
    let state = stream.info().await.context("reading OP_DLQ")?.state.clone();
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        if out.len() >= limit {
            break;
        }
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        let letter = Letter { seq, msg };
        if stage.is_none_or(|s| letter.header(header::STAGE) == s) {
            out.push(letter);
        }
    }
    Ok(out)
}

pub async fn list(bus: &Bus, stage: Option<&str>, limit: usize) -> anyhow::Result<()> {
    let all = letters(bus, stage, limit).await?;
    println!(
        "{:>6}  {:<20}  {:<9}  {:<12} {:<16} ERROR",
        "SEQ", "TIME", "STAGE", "ACCOUNT", "FEED"
    );
    for l in &all {
        let time = l
            .msg
            .time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        println!(
            "{:>6}  {:<20}  {:<9}  {:<12} {:<16} {}",
            l.seq,
            &time[..time.len().min(19)],
            l.header(header::STAGE),
            l.header(header::ACCOUNT),
            l.header(header::FEED),
            l.header(header::ERROR)
        );
    }
    println!("{} dead letter(s)", all.len());
    Ok(())
}

pub async fn show(bus: &Bus, seq: u64) -> anyhow::Result<()> {
    let stream = bus.jetstream().get_stream(names::STREAM_DLQ).await?;
    let msg = stream
        .get_raw_message(seq)
        .await
        .with_context(|| format!("no dead letter with sequence {seq}"))?;
    println!("subject: {}", msg.subject);
    for (name, values) in msg.headers.iter() {
        for v in values {
            println!("{name}: {v}");
        }
    }
    println!();
    println!("{}", String::from_utf8_lossy(&msg.payload));
    Ok(())
}

/// Re-injects normalize-stage dead letters into `OP_RAW`: a rejected page as it was, a rejected
/// record wrapped in a one-item page, so it takes the normal path through the normalizer.
pub async fn replay(bus: &Bus, seqs: &[u64], all: bool, keep: bool) -> anyhow::Result<()> {
    let chosen: Vec<Letter> = if all {
        letters(bus, Some("normalize"), usize::MAX).await?
    } else {
        if seqs.is_empty() {
            bail!("name the sequence numbers to replay (see `oprelay dlq list`), or pass --all");
        }
        let stream = bus.jetstream().get_stream(names::STREAM_DLQ).await?;
        let mut v = Vec::new();
        for seq in seqs {
            let msg = stream
                .get_raw_message(*seq)
                .await
                .with_context(|| format!("no dead letter with sequence {seq}"))?;
            v.push(Letter { seq: *seq, msg });
        }
        v
    };
    let stream = bus.jetstream().get_stream(names::STREAM_DLQ).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    for l in &chosen {
        if l.header(header::STAGE) != "normalize" {
            bail!(
                "dead letter {} is from the {} stage; only normalize-stage letters can be replayed",
                l.seq,
                l.header(header::STAGE)
            );
        }
        let account = AccountName::new(l.header(header::ACCOUNT))
            .with_context(|| format!("dead letter {} names no valid account", l.seq))?;
        let feed = l
            .header(header::FEED)
            .parse()
            .with_context(|| format!("dead letter {} names no valid feed", l.seq))?;
        let body = &l.msg.payload;
        let is_page =
            serde_json::from_slice::<oprelay_events::Page<serde::de::IgnoredAny>>(body).is_ok();
        let page = if is_page || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            body.to_vec()
        } else {
            let mut p = br#"{"cursor":"oprelay-replay","has_more":false,"items":["#.to_vec();
            p.extend_from_slice(body);
            p.extend_from_slice(b"]}");
            p
        };
        bus.publish(
            Outgoing::new(
                names::raw_subject(&account, feed),
                format!("replay:{}:{now}", l.seq),
                page,
            )
            .header(header::ACCOUNT, &account)
            .header(header::FEED, feed),
        )
        .await?;
        if !keep {
            stream
                .delete_message(l.seq)
                .await
                .with_context(|| format!("removing dead letter {}", l.seq))?;
        }
        println!(
            "replayed {} → {}",
            l.seq,
            names::raw_subject(&account, feed)
        );
    }
    println!("{} dead letter(s) replayed", chosen.len());
    Ok(())
}
