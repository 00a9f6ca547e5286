//! A subscriber of oprelay's normalized records, written as another team would write one: with
//! async-nats and serde_json only, from the contract (`docs/asyncapi.yaml`, `docs/schemas/`).
//!
//! It connects as the read-only `oprelay-subscriber` user, creates (or resumes) a durable pull
//! consumer of its own on `OP_EVENTS`, reads the records (one JSON object per line), counts them
//! per log type, and acknowledges each message after handling it. Because the consumer is
//! durable, a restart resumes after the last acknowledged message: nothing is read twice and
//! nothing is missed while it was down (within the stream's retention).
//!
//! ```sh
//! cargo run -p oprelay-subscriber-example -- --url tls://nats:4222 --ca ca.crt \
//!     --user oprelay-subscriber --password-file subscriber.pw --durable lake-loader
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use clap::Parser;
use futures::StreamExt;

/// The record schemas this subscriber understands (the `Oprelay-Schema` header). A message of a
/// new major version is left unacknowledged for a subscriber that knows it.
const KNOWN_SCHEMAS: [&str; 3] = [
    "onepassword.signinattempt.v1",
    "onepassword.itemusage.v1",
    "onepassword.auditevent.v1",
];

#[derive(Parser)]
#[command(about = "Count oprelay's normalized records per log type, from a durable consumer")]
struct Args {
    /// NATS server(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    url: String,
    #[arg(long, default_value = "oprelay-subscriber")]
    user: String,
    /// A file holding the user's password (a mounted Secret).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// The CA that signed the servers' certificates (turns TLS on).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// This subscriber's consumer; reuse the name to resume where it stopped.
    #[arg(long, default_value = "example-subscriber")]
    durable: String,
    /// Which records: `op.events.>` (all), `op.events.acme.>` (one account), …
    #[arg(long, default_value = "op.events.>")]
    filter: String,
    /// Stop once at least this many records were handled, after the batch at hand (default:
    /// run until Ctrl-C).
    #[arg(long)]
    max_records: Option<u64>,
    /// Messages per pull: the most that can be in hand (and unacknowledged) at once.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Stop when nothing arrived for this many seconds (default: wait for ever).
    #[arg(long)]
    idle_exit: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let js = jetstream::new(connect(&args).await?);
    let consumer = durable_consumer(&js, &args).await?;
    let mut counts = Counts::default();
    let mut idle = Duration::ZERO;
    // Batches, each handled whole before deciding to stop: a subscriber that stopped in the
    // middle of a prefetched batch would leave those messages unacknowledged until the ack
    // wait passed, and its next run would not see them for a minute.
    'batches: loop {
        if args.max_records.is_some_and(|max| counts.total >= max) {
            break;
        }
        if args
            .idle_exit
            .is_some_and(|secs| idle >= Duration::from_secs(secs))
        {
            break;
        }
        let wait = Duration::from_secs(1);
        let batch = consumer
            .fetch()
            .max_messages(args.batch.max(1))
            .expires(wait)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("pulling from OP_EVENTS: {e}"))?;
        let mut batch = std::pin::pin!(batch);
        let mut got = 0;
        loop {
            let next = tokio::select! {
                next = batch.next() => next,
                _ = tokio::signal::ctrl_c() => break 'batches,
            };
            let Some(message) = next else { break };
            let message = message.map_err(|e| anyhow::anyhow!("reading OP_EVENTS: {e}"))?;
            got += 1;
            handle(&message, &mut counts).await?;
        }
        idle = if got == 0 {
            idle + wait
        } else {
            Duration::ZERO
        };
    }
    println!(
        "{}",
        serde_json::json!({ "records": counts.total, "by_log_type": counts.by_log_type })
    );
    Ok(())
}

/// Connects as the subscriber user, over TLS when a CA is given.
async fn connect(args: &Args) -> anyhow::Result<async_nats::Client> {
    // With two rustls crypto providers linked, none is the default: choose async-nats's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut options = async_nats::ConnectOptions::new()
        .name("oprelay-subscriber-example")
        // The subscriber user may only use inboxes under its own prefix.
        .custom_inbox_prefix(format!("_INBOX.{}", args.user));
    if let Some(path) = &args.password_file {
        let password = std::fs::read_to_string(path)
            .with_context(|| format!("reading the password from {}", path.display()))?;
        options = options.user_and_password(args.user.clone(), password.trim().to_owned());
    }
    if let Some(ca) = &args.ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let servers: Vec<&str> = args.url.split(',').map(str::trim).collect();
    options
        .connect(servers)
        .await
        .with_context(|| format!("connecting to {}", args.url))
}

/// This subscriber's own durable consumer on `OP_EVENTS`: created on the first run, resumed on
/// the next ones (same name, same config).
async fn durable_consumer(
    js: &jetstream::Context,
    args: &Args,
) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    let stream = js
        .get_stream("OP_EVENTS")
        .await
        .context("opening OP_EVENTS")?;
    stream
        .get_or_create_consumer(
            &args.durable,
            pull::Config {
                durable_name: Some(args.durable.clone()),
                filter_subject: args.filter.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("creating or resuming consumer {}", args.durable))
}

/// Records handled, in all and per log type.
#[derive(Default)]
struct Counts {
    total: u64,
    by_log_type: BTreeMap<String, u64>,
}

/// Handles one message: its records counted, then the message acknowledged. A message of a
/// schema this subscriber does not know is left unacknowledged.
async fn handle(message: &jetstream::Message, counts: &mut Counts) -> anyhow::Result<()> {
    let schema = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Oprelay-Schema"))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    if !KNOWN_SCHEMAS.contains(&schema.as_str()) {
        eprintln!(
            "{}: schema {schema:?} is not one this subscriber knows; leaving it",
            message.subject
        );
        return Ok(());
    }
    for line in message
        .payload
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let record: serde_json::Value = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => bail!("{}: a line that is not JSON: {e}", message.subject),
        };
        let log_type = record["p_log_type"].as_str().unwrap_or("(none)").to_owned();
        *counts.by_log_type.entry(log_type).or_default() += 1;
        counts.total += 1;
    }
    // Acknowledged only once handled: a crash before this line means a redelivery, never a
    // lost message. `double_ack` waits for the server's confirmation.
    message
        .double_ack()
        .await
        .map_err(|e| anyhow::anyhow!("acknowledging: {e}"))
}
