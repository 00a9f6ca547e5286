//! Raw page bytes in, Panther-normalized NDJSON out: the one implementation behind both the
//! normalizer service and `oprelay normalize`.
//!
//! The hot path never builds a tree of the event. Each item is read once into a borrowed "peek"
//! of the few fields normalization needs (uuid, timestamp, IPs, emails, selector UUIDs;
//! `peek.rs`), and the output record is the item's own JSON text with the `p_*` fields appended
//! before its closing brace. That keeps every original field byte-for-byte as 1Password sent it
//! — order, number formatting, unknown fields — and costs little more than reading the page.
//! Enrichment is `enrich.rs`; the account's ids `source.rs`; refusals `reject.rs`.

mod enrich;
mod peek;
mod reject;
mod source;

use std::io::Write;
use std::net::IpAddr;

use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use oprelay_events::{
    format_panther, Feed, LogType, LookupKind, LookupRow, LookupSource, Page, Timestamp,
};

use crate::lookup::Lookups;
use enrich::{selector_names, write_enrichment};
use peek::{Peek, Str};
pub use reject::{Reject, RejectReason};
use source::row_id_hex;
pub use source::{derived_source_id, row_id, Source};

/// The result of normalizing one page.
#[derive(Debug, Default)]
pub struct NormalizedPage {
    /// One record per line, page order.
    pub ndjson: Vec<u8>,
    /// Records in `ndjson`.
    pub count: usize,
    /// The newest event time of the page.
    pub max_event_time: Option<OffsetDateTime>,
    /// Each record's event time, in line order (for splitting a page across messages).
    pub event_times: Vec<OffsetDateTime>,
    /// Each record's raw item size in bytes, in line order: parts are cut by these, so the
    /// cut does not depend on the lookups (see [`crate::parts`]).
    pub raw_sizes: Vec<usize>,
    /// Where each record's line ends in `ndjson` (after its line break), in line order: the
    /// cut needs the lines, and the normalizer knows them without reading the bytes again.
    pub ends: Vec<usize>,
    /// Records (or the page) refused, for the DLQ.
    pub rejects: Vec<Reject>,
    /// Users the page revealed that changed the index; the service persists them.
    pub learned: Vec<LookupRow>,
    /// Enrichment matches per selector, for metrics.
    pub matches: Vec<(&'static str, usize)>,
}

fn valid_email(s: &str) -> Option<&str> {
    let s = s.trim();
    let (local, domain) = s.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !has_space_or_control(s);
    ok.then_some(s)
}

/// Whether `s` has whitespace or a control character. Addresses are nearly always ASCII, read
/// byte by byte (the same set: ASCII's one whitespace that is not `is_ascii_whitespace`, the
/// vertical tab, is a control character); anything else char by char.
fn has_space_or_control(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    } else {
        s.chars().any(|c| c.is_whitespace() || c.is_control())
    }
}

fn write_str_list(out: &mut Vec<u8>, key: &str, mut values: Vec<String>) {
    if values.is_empty() {
        return;
    }
    values.sort_unstable();
    values.dedup();
    let _ = write!(out, ",\"{key}\":");
    let _ = serde_json::to_writer(&mut *out, &values);
}

/// Per-page settings shared by every record.
pub struct PageContext<'s> {
    /// The log type of every record of the page.
    pub log_type: LogType,
    /// The account the page belongs to.
    pub source: &'s Source,
    /// When the page was normalized: `p_parse_time`, and the event time of an event without
    /// one.
    pub parse_time: OffsetDateTime,
    /// `p_parse_time`, rendered once per page.
    parse_time_text: String,
    source_text: String,
}

impl<'s> PageContext<'s> {
    /// The settings of one page of `feed` from `source`, parsed at `parse_time`.
    pub fn new(feed: Feed, source: &'s Source, parse_time: OffsetDateTime) -> Self {
        let mut source_text = String::from(",\"p_source_id\":");
        source_text.push_str(&serde_json::to_string(&source.id).unwrap_or_default());
        source_text.push_str(",\"p_source_label\":");
        source_text.push_str(&serde_json::to_string(&source.label).unwrap_or_default());
        PageContext {
            log_type: feed.log_type(),
            source,
            parse_time,
            parse_time_text: format_panther(parse_time),
            source_text,
        }
    }
}

/// Normalizes one record (the item's JSON text) onto `out` as one line. Returns its event time.
/// On a refusal, `out` may hold part of the line; the caller truncates it.
pub fn normalize_record(
    raw: &str,
    ctx: &PageContext<'_>,
    index: &mut impl Lookups,
    out: &mut Vec<u8>,
    learned: &mut Vec<LookupRow>,
    matches: &mut [usize; 3],
) -> Result<OffsetDateTime, RejectReason> {
    let trimmed = raw.trim();
    if !trimmed.starts_with('{') {
        return Err(RejectReason::NotAnObject);
    }
    let peek: Peek = serde_json::from_str(trimmed).map_err(|_| RejectReason::NotAnObject)?;
    let uuid = match peek.uuid.text() {
        Some(u) if !u.trim().is_empty() => u,
        _ => return Err(RejectReason::NoUuid),
    };
    let event_time = event_time(&peek.timestamp, ctx.parse_time)?;
    // Learn the users this record names, before enriching, so the record itself benefits.
    learn_users(&peek, index, learned);
    write_original(out, trimmed)?;
    // The p_* fields as pieces, not `write!`: formatting machinery was a few percent of the
    // normalizer's CPU, for values that are already text.
    out.extend_from_slice(b"\"p_log_type\":\"");
    out.extend_from_slice(ctx.log_type.as_str().as_bytes());
    out.extend_from_slice(b"\",\"p_row_id\":\"");
    out.extend_from_slice(&row_id_hex(ctx.log_type, uuid));
    out.extend_from_slice(b"\",\"p_event_time\":\"");
    out.extend_from_slice(format_panther(event_time).as_bytes());
    out.extend_from_slice(b"\",\"p_parse_time\":\"");
    out.extend_from_slice(ctx.parse_time_text.as_bytes());
    out.push(b'"');
    out.extend_from_slice(ctx.source_text.as_bytes());
    write_any_fields(out, &peek);
    write_enrichment(out, ctx.log_type, &peek, index, matches);
    out.extend_from_slice(b"}\n");
    Ok(event_time)
}

/// The event's time: its `timestamp`, or the parse time when it has none.
fn event_time(
    timestamp: &Str<'_>,
    parse_time: OffsetDateTime,
) -> Result<OffsetDateTime, RejectReason> {
    match timestamp {
        Str::Missing => Ok(parse_time),
        Str::Text(t) => Timestamp::parse(t)
            .map(|t| t.instant())
            .map_err(|_| RejectReason::BadTimestamp(format!("`{t}`"))),
        Str::Other => Err(RejectReason::BadTimestamp("(not a string)".into())),
    }
}

/// Adds every person the event names with a name to the index, as an observed user row;
/// those that changed the index go to `learned`, for the service to persist.
fn learn_users(peek: &Peek<'_>, index: &mut impl Lookups, learned: &mut Vec<LookupRow>) {
    for u in peek.users() {
        let (Some(id), Some(name)) = (u.uuid.text(), u.name.text()) else {
            continue;
        };
        if id.is_empty() || name.is_empty() {
            continue;
        }
        let email = u.email.text().and_then(valid_email);
        if index
            .entry(LookupKind::User, id)
            .is_some_and(|e| e.unchanged_by_observing(name, email))
        {
            continue;
        }
        let row = LookupRow {
            uuid: id.to_owned(),
            kind: LookupKind::User,
            title: name.to_owned(),
            email: email.map(str::to_owned),
            updated_at: None,
            source: LookupSource::Observed,
        };
        if index.upsert(row.clone()) {
            learned.push(row);
        }
    }
}

/// Writes the original record, byte for byte, minus its closing brace (and any line breaks,
/// which JSON only allows between tokens, so NDJSON stays one record per line), then the comma
/// the `p_*` fields need.
fn write_original(out: &mut Vec<u8>, trimmed: &str) -> Result<(), RejectReason> {
    let body = &trimmed[..trimmed.len() - 1];
    let rewritten;
    // Both scans run over every record: memchr's SIMD search, not str's char patterns.
    let body: &str = if memchr::memmem::find(trimmed.as_bytes(), b"\"p_").is_some() {
        // Re-processing Panther output: drop its p_* fields, ours replace them.
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(trimmed).map_err(|_| RejectReason::NotAnObject)?;
        map.retain(|k, _| !k.starts_with("p_"));
        rewritten = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
        &rewritten[..rewritten.len() - 1]
    } else {
        body
    };
    let start = out.len();
    if memchr::memchr2(b'\n', b'\r', body.as_bytes()).is_some() {
        out.extend(body.bytes().filter(|b| *b != b'\n' && *b != b'\r'));
    } else {
        out.extend_from_slice(body.as_bytes());
    }
    let empty = out[start..].iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !empty {
        out.push(b',');
    }
    Ok(())
}

/// `p_any_ip_addresses` and `p_any_emails`: the valid addresses the event carries.
fn write_any_fields(out: &mut Vec<u8>, peek: &Peek<'_>) {
    let ips: Vec<String> = [
        peek.client.0.as_ref().and_then(|c| c.ip_address.text()),
        peek.session.0.as_ref().and_then(|s| s.ip.text()),
    ]
    .into_iter()
    .flatten()
    .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
    .map(|ip| ip.to_string())
    .collect();
    write_str_list(out, "p_any_ip_addresses", ips);
    let emails: Vec<String> = peek
        .users()
        .filter_map(|u| u.email.text().and_then(valid_email))
        .map(str::to_owned)
        .collect();
    write_str_list(out, "p_any_emails", emails);
}

/// Normalizes a raw API page of `feed`.
pub fn normalize_page(
    body: &[u8],
    feed: Feed,
    source: &Source,
    index: &mut impl Lookups,
    parse_time: OffsetDateTime,
) -> NormalizedPage {
    let mut result = NormalizedPage::default();
    let page: Page<&RawValue> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            let reason = if serde_json::from_slice::<IgnoredAny>(body).is_err() {
                RejectReason::PageNotJson(e.to_string())
            } else {
                RejectReason::NotAnEnvelope(e.to_string())
            };
            result.rejects.push(Reject {
                body: body.to_vec(),
                reason,
            });
            return result;
        }
    };
    let ctx = PageContext::new(feed, source, parse_time);
    result.ndjson.reserve(body.len() + page.items.len() * 420);
    let mut matches = [0usize; 3];
    for item in page.items {
        let mark = result.ndjson.len();
        match normalize_record(
            item.get(),
            &ctx,
            index,
            &mut result.ndjson,
            &mut result.learned,
            &mut matches,
        ) {
            Ok(t) => {
                result.count += 1;
                result.event_times.push(t);
                result.raw_sizes.push(item.get().len());
                result.ends.push(result.ndjson.len());
                result.max_event_time = Some(result.max_event_time.map_or(t, |m| m.max(t)));
            }
            Err(reason) => {
                result.ndjson.truncate(mark);
                result.rejects.push(Reject {
                    body: item.get().as_bytes().to_vec(),
                    reason,
                });
            }
        }
    }
    result.matches = selector_names(ctx.log_type)
        .iter()
        .copied()
        .zip(matches)
        .filter(|(_, n)| *n > 0)
        .collect();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_shortcut_finds_what_the_char_test_finds() {
        let others = ['\u{85}', '\u{a0}', '\u{2003}', '\u{3000}', 'é', 'ß'];
        for c in (0u8..=0x7f).map(char::from).chain(others) {
            let expected = c.is_whitespace() || c.is_control();
            for s in [c.to_string(), format!("a{c}b@example.com")] {
                assert_eq!(has_space_or_control(&s), expected, "{s:?}");
            }
        }
        assert!(
            valid_email(" alice@example.com ").is_some(),
            "trimmed first"
        );
        assert!(valid_email("al\u{b}ice@example.com").is_none());
        assert!(valid_email("alice@exa\u{a0}mple.com").is_none());
    }
}
