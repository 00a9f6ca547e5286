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

/// Which dead letters a command is about.
#[derive(Clone, Copy, Default)]
pub struct Filter<'a> {
    pub stage: Option<&'a str>,
    pub sink: Option<&'a str>,
}

impl Filter<'_> {
    fn matches(&self, letter: &Letter) -> bool {
        self.stage.is_none_or(|s| letter.header(header::STAGE) == s)
            && self.sink.is_none_or(|s| letter.header(header::SINK) == s)
    }
}

async fn letters(bus: &Bus, filter: Filter<'_>, limit: usize) -> anyhow::Result<Vec<Letter>> {
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
        if filter.matches(&letter) {
            out.push(letter);
        }
    }
    Ok(out)
}

pub async fn list(bus: &Bus, filter: Filter<'_>, limit: usize) -> anyhow::Result<()> {
    let all = letters(bus, filter, limit).await?;
    println!(
        "{:>6}  {:<20}  {:<9}  {:<12} {:<16} {:<12} ERROR",
        "SEQ", "TIME", "STAGE", "ACCOUNT", "FEED", "SINK"
    );
    for l in &all {
        let time = l
            .msg
            .time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        println!(
            "{:>6}  {:<20}  {:<9}  {:<12} {:<16} {:<12} {}",
            l.seq,
            &time[..time.len().min(19)],
            l.header(header::STAGE),
            l.header(header::ACCOUNT),
            l.header(header::FEED),
            l.header(header::SINK),
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

/// Sends dead letters back: a normalize-stage letter into `OP_RAW` (a rejected page as it was,
/// a rejected record wrapped in a one-item page) so it takes the normal path through the
/// normalizer; a forward-stage letter to `op.replay.{sink}.…`, which only the sink that refused
/// it reads. Fetch-stage letters hold a truncated event and cannot be replayed.
pub async fn replay(
    bus: &Bus,
    seqs: &[u64],
    all: Option<Filter<'_>>,
    keep: bool,
) -> anyhow::Result<()> {
    let chosen: Vec<Letter> = if let Some(filter) = all {
        letters(bus, filter, usize::MAX)
            .await?
            .into_iter()
            .filter(|l| l.header(header::STAGE) != "fetch")
            .collect()
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
        let account = AccountName::new(l.header(header::ACCOUNT))
            .with_context(|| format!("dead letter {} names no valid account", l.seq))?;
        let feed = l
            .header(header::FEED)
            .parse()
            .with_context(|| format!("dead letter {} names no valid feed", l.seq))?;
        let (subject, body) = match l.header(header::STAGE) {
            "normalize" => (names::raw_subject(&account, feed), as_page(&l.msg.payload)),
            "forward" => {
                let sink = l.header(header::SINK);
                if sink == "-" {
                    bail!("dead letter {} names no sink (Oprelay-Sink)", l.seq);
                }
                (
                    names::replay_subject(sink, &account, feed),
                    l.msg.payload.to_vec(),
                )
            }
            other => bail!(
                "dead letter {} is from the {other} stage; only normalize and forward letters \
                 can be replayed",
                l.seq
            ),
        };
        let mut out = Outgoing::new(&subject, format!("replay:{}:{now}", l.seq), body)
            .header(header::ACCOUNT, &account)
            .header(header::FEED, feed);
        if l.header(header::STAGE) == "forward" {
            out = out
                .header(header::SINK, l.header(header::SINK))
                .header(header::COUNT, 1);
        }
        bus.publish(out).await?;
        if !keep {
            stream
                .delete_message(l.seq)
                .await
                .with_context(|| format!("removing dead letter {}", l.seq))?;
        }
        println!("replayed {} → {subject}", l.seq);
    }
    println!("{} dead letter(s) replayed", chosen.len());
    Ok(())
}

/// A normalize-stage letter as a page for `OP_RAW`: a page as it was, a record wrapped.
fn as_page(body: &[u8]) -> Vec<u8> {
    let is_page =
        serde_json::from_slice::<oprelay_events::Page<serde::de::IgnoredAny>>(body).is_ok();
    if is_page || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        body.to_vec()
    } else {
        let mut p = br#"{"cursor":"oprelay-replay","has_more":false,"items":["#.to_vec();
        p.extend_from_slice(body);
        p.extend_from_slice(b"]}");
        p
    }
}
