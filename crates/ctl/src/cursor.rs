//! `oprelay cursor show|reset`: where a feed's next Events API request starts, and moving it.
//!
//! The cursor lives in `OP_CURSORS` under `{account}.{feed}`. The fetcher writes it with
//! compare-and-set after each acknowledged page, so a reset needs no coordination: the
//! fetcher's next write fails on the changed revision, it re-reads the key, and its next
//! request starts where the reset says. Events fetched again are published with the same
//! dedup ids where the pages match, and idempotent sinks keep one copy of the rest.

use std::process::ExitCode;

use anyhow::{bail, Context};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use oprelay_bus::{Bus, JsonKv};
use oprelay_events::{names, AccountName, CursorState, Feed, Lease};

use clap::Subcommand;
use oprelay_bus::Need;
use oprelay_service::config::Config;

use crate::args::{account_name, parse_feed};
use crate::connect::{connect_read_only, connect_to_write};
use crate::output::{json, table, Output};

/// Where `cursor reset` moves a feed to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResetTo {
    /// The next request is a reset with this `start_time`.
    Time(OffsetDateTime),
    /// Forget the cursor: the fetcher starts the feed as a new one, from its configured
    /// `accounts[].start_time` (one hour back without it).
    Start,
}

/// `cursor show --output json`.
#[derive(Serialize)]
struct Shown {
    account: String,
    feed: Feed,
    key: String,
    /// `None`: never polled, or reset to the start.
    cursor: Option<CursorState>,
    revision: Option<u64>,
    /// The fetcher replica polling the feed now, if any.
    lease: Option<Lease>,
}

pub async fn show(
    bus: &Bus,
    account: &AccountName,
    feed: Feed,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let key = names::feed_key(account, feed);
    let cursors = JsonKv::open(bus, names::BUCKET_CURSORS).await?;
    let leases = JsonKv::open(bus, names::BUCKET_LEASES).await?;
    let current = cursors
        .get::<CursorState>(&key)
        .await
        .with_context(|| format!("reading {} {key}", names::BUCKET_CURSORS))?;
    let lease = leases
        .get::<Lease>(&key)
        .await
        .ok()
        .flatten()
        .map(|l| l.value);
    let shown = Shown {
        account: account.to_string(),
        feed,
        key: key.clone(),
        revision: current.as_ref().map(|c| c.revision),
        cursor: current.map(|c| c.value),
        lease,
    };
    if output == Output::Json {
        print!("{}", json(&shown)?);
        return Ok(ExitCode::SUCCESS);
    }
    let when = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let Some(c) = &shown.cursor else {
        println!("{key}: no cursor; the fetcher starts this feed from its configured start_time");
        return Ok(ExitCode::SUCCESS);
    };
    let next = if c.cursor.is_empty() {
        format!(
            "reset from {}",
            c.start_time.as_deref().unwrap_or("the API's default start")
        )
    } else {
        format!("cursor {}", c.cursor)
    };
    print!(
        "{}",
        table(
            [
                "FEED",
                "NEXT REQUEST",
                "UPDATED",
                "PAGES",
                "EVENTS",
                "POLLED BY"
            ],
            [[
                key.clone(),
                next,
                when(c.updated_at),
                c.pages.to_string(),
                c.events.to_string(),
                shown
                    .lease
                    .as_ref()
                    .map(|l| format!("{} until {}", l.owner, when(l.expires_at)))
                    .unwrap_or_else(|| "-".into()),
            ]],
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// The cursor a reset to `time` writes: no API cursor, the reset's start time fixed.
pub fn reset_state(time: OffsetDateTime, now: OffsetDateTime) -> anyhow::Result<CursorState> {
    if time > now {
        bail!(
            "--to {} is in the future; the Events API returns nothing after now",
            time.format(&Rfc3339).unwrap_or_default()
        );
    }
    Ok(CursorState {
        cursor: String::new(),
        start_time: Some(time.format(&Rfc3339)?),
        updated_at: now,
        pages: 0,
        events: 0,
    })
}

pub async fn reset(
    bus: &Bus,
    account: &AccountName,
    feed: Feed,
    to: ResetTo,
) -> anyhow::Result<()> {
    let key = names::feed_key(account, feed);
    let cursors = JsonKv::open(bus, names::BUCKET_CURSORS).await?;
    match to {
        ResetTo::Time(time) => {
            let state = reset_state(time, OffsetDateTime::now_utc())?;
            cursors
                .put(&key, &state)
                .await
                .with_context(|| format!("writing {} {key}", names::BUCKET_CURSORS))?;
            println!(
                "{key}: the next request starts from {}",
                state.start_time.unwrap_or_default()
            );
        }
        ResetTo::Start => {
            cursors
                .store()
                .delete(&key)
                .await
                .with_context(|| format!("deleting {} {key}", names::BUCKET_CURSORS))?;
            println!("{key}: cursor removed; the fetcher starts the feed over from its configured start_time");
        }
    }
    Ok(())
}

/// `--to` as RFC 3339 (`2026-12-01T00:00:00Z`).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time like 2026-12-01T00:00:00Z: {e}"))
}

#[derive(Subcommand)]
pub enum CursorCommand {
    /// The stored cursor (or pending reset), its counters and the replica polling the feed.
    Show {
        #[arg(long)]
        account: String,
        #[arg(long, value_parser = parse_feed)]
        feed: Feed,
    },
    /// Move the feed: the fetcher's next request starts from `--to TIME`, or, with
    /// `--to-start`, from its configured start_time as for a new feed. Events fetched again
    /// are deduplicated by NATS where the pages match; idempotent sinks absorb the rest.
    #[command(group(clap::ArgGroup::new("target").required(true)))]
    Reset {
        #[arg(long)]
        account: String,
        #[arg(long, value_parser = parse_feed)]
        feed: Feed,
        /// RFC 3339, e.g. 2026-12-01T00:00:00Z.
        #[arg(long, value_parser = parse_time, group = "target")]
        to: Option<time::OffsetDateTime>,
        /// Forget the cursor; the fetcher starts the feed as a new one.
        #[arg(long, group = "target")]
        to_start: bool,
    },
}

/// Runs one `oprelay cursor …` command.
pub async fn command(cmd: CursorCommand, cfg: &Config, output: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        CursorCommand::Show { account, feed } => {
            let account = account_name(&account)?;
            show(&connect_read_only(cfg).await?, &account, feed, output).await
        }
        CursorCommand::Reset {
            account,
            feed,
            to,
            to_start: _,
        } => {
            let account = account_name(&account)?;
            let to = match to {
                Some(t) => ResetTo::Time(t),
                None => ResetTo::Start,
            };
            let bus = connect_to_write(cfg, &[Need::Bucket(names::BUCKET_CURSORS)]).await?;
            reset(&bus, &account, feed, to).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_reset_fixes_the_start_time_and_clears_the_api_cursor() {
        let now = datetime!(2026-12-03 08:00 UTC);
        let state = reset_state(datetime!(2026-12-01 00:00 UTC), now).unwrap();
        assert_eq!(state.cursor, "");
        assert_eq!(state.start_time.as_deref(), Some("2026-12-01T00:00:00Z"));
        assert_eq!(state.updated_at, now);
        assert_eq!((state.pages, state.events), (0, 0));
    }

    #[test]
    fn a_reset_into_the_future_is_refused() {
        let now = datetime!(2026-12-03 08:00 UTC);
        let e = reset_state(datetime!(2026-12-04 00:00 UTC), now).unwrap_err();
        assert!(e.to_string().contains("in the future"), "{e}");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(
            parse_time("2026-12-01T00:00:00Z"),
            Ok(datetime!(2026-12-01 00:00 UTC))
        );
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
