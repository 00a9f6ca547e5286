//! The record formats a sink can ask for: `panther` (the normalized record as published),
//! `raw` (the original 1Password event only), `ecs` (Elastic Common Schema).
//!
//! A crate of its own so that whoever renders records (the forwarder's sinks, `oprelay
//! normalize --format`, a subscriber) takes the same code without the sinks' HTTP and TLS.

#![warn(missing_docs)]

use bytes::Bytes;
use serde::Deserialize;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use oprelay_events::{Feed, LogType};

mod ecs;
pub use ecs::ecs;

/// How records are written for the SIEM (a sink's `format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// The normalized record, as Panther's schemas have it.
    #[default]
    Panther,
    /// 1Password's event as the API returned it.
    Raw,
    /// Elastic Common Schema.
    Ecs,
}

/// One record ready for a sink.
#[derive(Clone, Debug)]
pub struct Record {
    /// One JSON object in the sink's format, no trailing newline. In the `panther` format it
    /// is the normalized record itself, shared with [`Record::source`] rather than copied.
    pub body: Bytes,
    /// `p_row_id`: the record's id, which sinks that can deduplicate use (Elasticsearch's
    /// `_id`).
    pub row_id: String,
    /// The Panther log type of its feed.
    pub log_type: LogType,
    /// `p_event_time`: when 1Password says it happened.
    pub event_time: OffsetDateTime,
    /// The account it came from.
    pub account: String,
    /// The feed it came from.
    pub feed: Feed,
    /// When the normalizer parsed it, for the delivery-lag metric.
    pub parse_time: Option<OffsetDateTime>,
    /// The normalized record it was rendered from (in the forwarder, a slice of the bus
    /// message, not a copy): what a dead letter keeps, so a replay renders it again.
    pub source: Bytes,
}

impl Record {
    /// What a dead letter keeps: the normalized record.
    pub fn kept(&self) -> &[u8] {
        &self.source
    }
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    p_row_id: &'a str,
    #[serde(borrow)]
    p_event_time: &'a str,
    #[serde(borrow, default)]
    p_parse_time: Option<&'a str>,
}

/// Reads Panther's `YYYY-MM-DD HH:MM:SS.fffffffff` (UTC). Every record the forwarder renders
/// carries one or two, always in the exact shape the normalizer writes (nine digits), which is
/// read digit by digit; any other shape (fewer digits, no fraction) goes through `time`'s
/// parser, which costs several times as much.
pub fn parse_panther_time(s: &str) -> Option<OffsetDateTime> {
    exact_panther_time(s).or_else(|| any_panther_time(s))
}

/// `YYYY-MM-DD HH:MM:SS.fffffffff` and nothing else; `None` for any other shape or an
/// impossible date or time.
fn exact_panther_time(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    let shape = b.len() == 29
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.';
    if !shape {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let month = time::Month::try_from(u8::try_from(num(5, 7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0, 4)?).ok()?,
        month,
        u8::try_from(num(8, 10)?).ok()?,
    )
    .ok()?;
    let at = time::Time::from_hms_nano(
        u8::try_from(num(11, 13)?).ok()?,
        u8::try_from(num(14, 16)?).ok()?,
        u8::try_from(num(17, 19)?).ok()?,
        num(20, 29)?,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, at).assume_utc())
}

fn any_panther_time(s: &str) -> Option<OffsetDateTime> {
    let fmt = format_description!(
        version = 2,
        "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(s, &fmt)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// The original event: the normalized record minus the `p_*` fields the normalizer appended
/// after it. The normalizer writes them last, starting with `p_log_type`, so the original is
/// everything before the last `,"p_log_type":` (a nested key of that name would come earlier).
pub fn original(line: &[u8]) -> Option<Vec<u8>> {
    const MARK: &[u8] = b",\"p_log_type\":";
    if let Some(pos) = line.windows(MARK.len()).rposition(|w| w == MARK) {
        let mut out = line[..pos].to_vec();
        out.push(b'}');
        return Some(out);
    }
    line.starts_with(b"{\"p_log_type\":")
        .then(|| b"{}".to_vec())
}

/// Why a line of `OP_EVENTS` cannot be rendered for a sink.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The line is not a record the normalizer wrote.
    #[error("not a normalized record: {0}")]
    NotARecord(serde_json::Error),
    /// Its `p_event_time` is not in Panther's format.
    #[error("p_event_time `{0}` is not Panther's format")]
    EventTime(String),
    /// It has no `p_*` fields, so there is no original event to cut out (`raw`).
    #[error("the record has no p_log_type")]
    NoLogType,
    /// It could not be read as a JSON object for the ECS mapping.
    #[error("cannot map it to ECS: {0}")]
    Ecs(serde_json::Error),
}

/// What every sink needs of a normalized record besides its body.
struct RecordMeta {
    row_id: String,
    event_time: OffsetDateTime,
    parse_time: Option<OffsetDateTime>,
}

impl RecordMeta {
    fn from(meta: Meta<'_>) -> Result<RecordMeta, RenderError> {
        let event_time = parse_panther_time(meta.p_event_time)
            .ok_or_else(|| RenderError::EventTime(meta.p_event_time.to_owned()))?;
        Ok(RecordMeta {
            row_id: meta.p_row_id.to_owned(),
            event_time,
            parse_time: meta.p_parse_time.and_then(parse_panther_time),
        })
    }
}

/// The `p_*` fields of a normalized record. The normalizer writes them last, starting with
/// `p_log_type`, so they are read from that tail alone: the original event before it (most of
/// the record) is not tokenized again for every sink. A key of that name nested inside the
/// event comes earlier, and one inside a string has its quotes escaped, so the last match is
/// the normalizer's. A record without the mark (another writer) is read whole.
fn meta(line: &[u8]) -> Result<RecordMeta, RenderError> {
    const MARK: &[u8] = b",\"p_log_type\":";
    if let Some(pos) = line.windows(MARK.len()).rposition(|w| w == MARK) {
        // `"p_log_type":…}` ends the record: with a `{` before it, an object of its own.
        let mut tail = Vec::with_capacity(line.len() - pos);
        tail.push(b'{');
        tail.extend_from_slice(&line[pos + 1..]);
        if let Ok(m) = serde_json::from_slice::<Meta>(&tail) {
            return RecordMeta::from(m);
        }
    }
    let m: Meta = serde_json::from_slice(line).map_err(RenderError::NotARecord)?;
    RecordMeta::from(m)
}

/// Renders one NDJSON line of an `OP_EVENTS` batch for a sink. The line is taken as shared
/// bytes (a slice of the bus message) so that the `panther` format, the record as it is,
/// costs no copy.
pub fn render(
    line: Bytes,
    format: OutputFormat,
    account: &str,
    feed: Feed,
) -> Result<Record, RenderError> {
    let meta = meta(&line)?;
    let body = match format {
        OutputFormat::Panther => line.clone(),
        OutputFormat::Raw => original(&line).ok_or(RenderError::NoLogType)?.into(),
        OutputFormat::Ecs => ecs(&line, feed, meta.event_time)
            .map_err(RenderError::Ecs)?
            .into(),
    };
    Ok(Record {
        body,
        row_id: meta.row_id,
        log_type: feed.log_type(),
        event_time: meta.event_time,
        account: account.to_owned(),
        feed,
        parse_time: meta.parse_time,
        source: line,
    })
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    oprelay_events::format_rfc3339_nanos(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The digit-by-digit reading gives what `time`'s parser gives, on every instant the
        /// normalizer can write.
        #[test]
        fn panther_times_read_exactly(secs in 0i64..253_402_300_799, nanos in 0u32..1_000_000_000) {
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap().replace_nanosecond(nanos).unwrap();
            let text = oprelay_events::format_panther(t);
            proptest::prop_assert_eq!(exact_panther_time(&text), Some(t));
            proptest::prop_assert_eq!(any_panther_time(&text), Some(t));
        }
    }

    #[test]
    fn other_shapes_and_impossible_times_are_not_read_as_exact() {
        for s in [
            "2026-03-01 12:00:00",
            "2026-03-01 12:00:00.25",
            "2026-02-30 12:00:00.000000000",
            "2026-03-01 24:00:00.000000000",
            "2026-03-01T12:00:00.000000000",
            "2026-03-01 12:00:0x.000000000",
        ] {
            assert_eq!(exact_panther_time(s), None, "{s}");
        }
        // The shapes `time` reads are still read.
        assert!(parse_panther_time("2026-03-01 12:00:00").is_some());
        assert!(parse_panther_time("2026-03-01 12:00:00.25").is_some());
        assert!(parse_panther_time("2026-02-30 12:00:00.000000000").is_none());
    }

    #[test]
    fn the_p_fields_read_from_the_tail_are_the_ones_a_whole_parse_reads() {
        // LINE nests a decoy `p_log_type` inside the event; a record of another writer has
        // its p_ fields first; a damaged tail falls back to the whole record.
        let other_writer =
            r#"{"p_row_id":"r2","p_event_time":"2026-03-01 12:00:00.000000000","uuid":"E2"}"#;
        let damaged = r#"{"uuid":"E3","p_event_time":"2026-03-01 12:00:00.000000000","x":1,"p_log_type":"OnePassword.ItemUsage","p_row_id":"r3"}"#;
        for line in [LINE, other_writer, damaged] {
            let fast = meta(line.as_bytes()).unwrap();
            let whole: Meta = serde_json::from_str(line).unwrap();
            let whole = RecordMeta::from(whole).unwrap();
            assert_eq!(fast.row_id, whole.row_id, "{line}");
            assert_eq!(fast.event_time, whole.event_time, "{line}");
            assert_eq!(fast.parse_time, whole.parse_time, "{line}");
        }
        assert_eq!(meta(LINE.as_bytes()).unwrap().row_id, "abc");
        assert!(meta(b"{\"uuid\":\"E4\"}").is_err());
    }

    const LINE: &str = r#"{"uuid":"E1","timestamp":"2026-03-01T12:00:00Z","nested":{"p_log_type":"tricky"},"p_log_type":"OnePassword.ItemUsage","p_row_id":"abc","p_event_time":"2026-03-01 12:00:00.250000000","p_parse_time":"2026-03-01 12:00:01.000000000","p_source_id":"s","p_source_label":"L"}"#;

    #[test]
    fn raw_is_the_original_event() {
        let line = Bytes::from_static(LINE.as_bytes());
        let r = render(line, OutputFormat::Raw, "acme", Feed::ItemUsages).unwrap();
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            r#"{"uuid":"E1","timestamp":"2026-03-01T12:00:00Z","nested":{"p_log_type":"tricky"}}"#
        );
        assert_eq!(r.row_id, "abc");
        assert_eq!(
            r.event_time.unix_timestamp_nanos(),
            1_772_366_400_250_000_000
        );
        assert_eq!(
            original(br#"{"p_log_type":"x","p_row_id":"y"}"#).unwrap(),
            b"{}"
        );
    }

    #[test]
    fn panther_is_untouched_and_bad_lines_are_errors() {
        let line = Bytes::from_static(LINE.as_bytes());
        let r = render(
            line.clone(),
            OutputFormat::Panther,
            "acme",
            Feed::ItemUsages,
        )
        .unwrap();
        assert_eq!(r.body, LINE.as_bytes());
        assert_eq!(
            r.body.as_ptr(),
            line.as_ptr(),
            "the record itself, not a copy"
        );
        assert_eq!(r.kept(), LINE.as_bytes());
        for bad in [&b"{}"[..], b"nope"] {
            let bad = Bytes::from_static(bad);
            assert!(render(bad.clone(), OutputFormat::Panther, "acme", Feed::ItemUsages).is_err());
            assert!(render(bad, OutputFormat::Raw, "acme", Feed::ItemUsages).is_err());
        }
    }
}
