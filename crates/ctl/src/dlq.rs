//! `oprelay dlq …`

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use oprelay_bus::async_nats::jetstream::message::StreamMessage;
use oprelay_bus::{header_value, Bus, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::AccountName;

use std::process::ExitCode;

use clap::Subcommand;
use oprelay_bus::Need;
use oprelay_service::config::Config;

use crate::connect::{connect_read_only, connect_to_write};
use crate::output::{json, table, Output};

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

/// One dead letter as `dlq list` shows it (`--output json`: these fields).
#[derive(Serialize)]
struct Listed<'a> {
    seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    subject: &'a str,
    stage: Option<&'a str>,
    account: Option<&'a str>,
    feed: Option<&'a str>,
    sink: Option<&'a str>,
    error: Option<&'a str>,
}

impl Letter {
    fn listed(&self) -> Listed<'_> {
        let get = |name| header_value(Some(&self.msg.headers), name);
        Listed {
            seq: self.seq,
            time: self.msg.time,
            subject: self.msg.subject.as_str(),
            stage: get(header::STAGE),
            account: get(header::ACCOUNT),
            feed: get(header::FEED),
            sink: get(header::SINK),
            error: get(header::ERROR),
        }
    }
}

pub async fn list(
    bus: &Bus,
    filter: Filter<'_>,
    limit: usize,
    output: Output,
) -> anyhow::Result<()> {
    let all = letters(bus, filter, limit).await?;
    let listed: Vec<Listed> = all.iter().map(Letter::listed).collect();
    if output == Output::Json {
        print!("{}", json(&listed)?);
        return Ok(());
    }
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    print!(
        "{}",
        table(
            ["SEQ", "TIME", "STAGE", "ACCOUNT", "FEED", "SINK", "ERROR"],
            listed.iter().map(|l| {
                let time = l.time.format(&Rfc3339).unwrap_or_default();
                [
                    l.seq.to_string(),
                    time[..time.len().min(19)].to_owned(),
                    dash(l.stage),
                    dash(l.account),
                    dash(l.feed),
                    dash(l.sink),
                    dash(l.error),
                ]
            }),
        )
    );
    println!("{} dead letter(s)", all.len());
    Ok(())
}

/// `dlq show --output json`: the letter with its headers, and its body as JSON when it is.
#[derive(Serialize)]
struct Shown {
    seq: u64,
    subject: String,
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    headers: BTreeMap<String, Vec<String>>,
    body: serde_json::Value,
}

pub async fn show(bus: &Bus, seq: u64, output: Output) -> anyhow::Result<()> {
    let stream = bus.jetstream().get_stream(names::STREAM_DLQ).await?;
    let msg = stream
        .get_raw_message(seq)
        .await
        .with_context(|| format!("no dead letter with sequence {seq}"))?;
    if output == Output::Json {
        let headers = msg
            .headers
            .iter()
            .map(|(name, values)| {
                let values = values.iter().map(|v| v.as_str().to_owned()).collect();
                (name.to_string(), values)
            })
            .collect();
        let body = serde_json::from_slice(&msg.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&msg.payload).into_owned())
        });
        let shown = Shown {
            seq,
            subject: msg.subject.to_string(),
            time: msg.time,
            headers,
            body,
        };
        print!("{}", json(&shown)?);
        return Ok(());
    }
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
                .header(header::SCHEMA, names::schema::record(feed.log_type()))
                .header(header::COUNT, 1);
        } else {
            out = out.header(header::SCHEMA, names::schema::RAW_PAGE);
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

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Dead letters, oldest first.
    List {
        /// Only this stage: fetch, normalize or forward.
        #[arg(long)]
        stage: Option<String>,
        /// Only letters this sink refused (forward stage).
        #[arg(long)]
        sink: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One dead letter with its headers and body.
    Show { seq: u64 },
    /// Send dead letters back after a fix, and remove them from the DLQ: a normalize-stage
    /// letter through the normalizer, a forward-stage letter to the one sink that refused it.
    Replay {
        /// Sequence numbers from `oprelay dlq list`.
        seqs: Vec<u64>,
        /// Every replayable dead letter (of `--stage` and `--sink`, when given).
        #[arg(long, conflicts_with = "seqs")]
        all: bool,
        /// With --all: only this stage (normalize or forward).
        #[arg(long, requires = "all")]
        stage: Option<String>,
        /// With --all: only letters this sink refused.
        #[arg(long, requires = "all")]
        sink: Option<String>,
        /// Keep them in the DLQ after replaying.
        #[arg(long)]
        keep: bool,
    },
}

/// Runs one `oprelay dlq …` command.
pub async fn command(cmd: DlqCommand, cfg: &Config, output: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        DlqCommand::List { stage, sink, limit } => {
            let filter = Filter {
                stage: stage.as_deref(),
                sink: sink.as_deref(),
            };
            list(&connect_read_only(cfg).await?, filter, limit, output).await?;
        }
        DlqCommand::Show { seq } => show(&connect_read_only(cfg).await?, seq, output).await?,
        DlqCommand::Replay {
            seqs,
            all,
            stage,
            sink,
            keep,
        } => {
            let all = all.then_some(Filter {
                stage: stage.as_deref(),
                sink: sink.as_deref(),
            });
            let needs = [
                Need::Stream(names::STREAM_DLQ),
                Need::Stream(names::STREAM_RAW),
                Need::Stream(names::STREAM_EVENTS),
            ];
            replay(&connect_to_write(cfg, &needs).await?, &seqs, all, keep).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
