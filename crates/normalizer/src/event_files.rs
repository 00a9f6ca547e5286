//! 1Password events from files: what `oprelay normalize` and `oprelay ingest` read.
//!
//! Teams arrive with events that other collectors wrote: raw API items one per line, whole API
//! pages, eventsapibeat / Elastic documents that kept the original under `event.original` (or
//! `message`), Splunk exports with the event under `_raw` or `result._raw`, one value per line
//! or one JSON document. This module finds the API items inside all of those and tells which
//! feed each belongs to, so both commands feed the normalizer's own code the bytes 1Password
//! sent, and nothing else.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead};

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use oprelay_events::Feed;

/// One API item found in the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundEvent<'a> {
    /// The item's JSON text, as 1Password sent it.
    pub raw: Cow<'a, str>,
    pub feed: Feed,
}

impl FoundEvent<'_> {
    pub fn into_owned(self) -> FoundEvent<'static> {
        FoundEvent {
            raw: Cow::Owned(self.raw.into_owned()),
            feed: self.feed,
        }
    }
}

/// Why a value in the input yielded no event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShapeError {
    NotJson(String),
    NotUtf8,
    /// Valid JSON, but none of the shapes this module knows.
    Unknown(&'static str),
    /// The feed could not be told from the fields, and `--feed` was not given.
    UnknownFeed,
    /// Fields of more than one feed.
    AmbiguousFeed(Feed, Feed),
    /// `--feed` says one feed, the fields say another.
    WrongFeed {
        expected: Feed,
        found: Feed,
    },
    /// A wrapper's embedded event (`_raw`, `event.original`, `message`) is not JSON.
    EmbeddedNotJson(&'static str, String),
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::NotJson(e) => write!(f, "not valid JSON: {e}"),
            ShapeError::NotUtf8 => f.write_str("not valid UTF-8"),
            ShapeError::Unknown(what) => write!(
                f,
                "not a 1Password event: {what} (expected an API item with a uuid, an API page \
                 {{cursor, has_more, items}}, a Splunk export with _raw or result._raw, or a \
                 document with event.original)"
            ),
            ShapeError::UnknownFeed => f.write_str(
                "cannot tell the feed: the event has none of item_uuid/used_version \
                 (item_usages), actor_uuid/object_type (audit_events), target_user/category/\
                 session_uuid (signin_attempts); pass --feed",
            ),
            ShapeError::AmbiguousFeed(a, b) => write!(
                f,
                "cannot tell the feed: the event has fields of both {a} and {b}; pass --feed"
            ),
            ShapeError::WrongFeed { expected, found } => write!(
                f,
                "looks like a {found} event (by its fields), not {expected} as --feed says"
            ),
            ShapeError::EmbeddedNotJson(field, e) => {
                write!(f, "the event under {field} is not valid JSON: {e}")
            }
        }
    }
}

impl std::error::Error for ShapeError {}

/// The top-level keys that tell a shape apart, read without building the value.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Shape<'a> {
    uuid: Option<IgnoredAny>,
    #[serde(borrow)]
    items: Option<&'a RawValue>,
    #[serde(borrow, rename = "_raw")]
    splunk_raw: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    // Feed markers.
    item_uuid: Option<IgnoredAny>,
    used_version: Option<IgnoredAny>,
    actor_uuid: Option<IgnoredAny>,
    object_type: Option<IgnoredAny>,
    target_user: Option<IgnoredAny>,
    category: Option<IgnoredAny>,
    session_uuid: Option<IgnoredAny>,
}

impl Shape<'_> {
    fn feed(&self) -> Result<Feed, ShapeError> {
        let mut found: Option<Feed> = None;
        let candidates = [
            (
                Feed::ItemUsages,
                self.item_uuid.is_some() || self.used_version.is_some(),
            ),
            (
                Feed::AuditEvents,
                self.actor_uuid.is_some() || self.object_type.is_some(),
            ),
            (
                Feed::SignInAttempts,
                self.target_user.is_some()
                    || self.category.is_some()
                    || self.session_uuid.is_some(),
            ),
        ];
        for (feed, matches) in candidates {
            if !matches {
                continue;
            }
            if let Some(first) = found {
                return Err(ShapeError::AmbiguousFeed(first, feed));
            }
            found = Some(feed);
        }
        found.ok_or(ShapeError::UnknownFeed)
    }
}

#[derive(Deserialize)]
struct EcsEvent<'a> {
    #[serde(borrow)]
    original: Option<&'a RawValue>,
}

/// Wrappers nest at most a few levels (a Splunk result around `_raw` around a page); more is
/// not an export format but a malicious or broken input.
const MAX_DEPTH: usize = 6;

/// The API items inside one JSON value, with their feeds. `feed` is `--feed`: when given,
/// events are of that feed unless their fields clearly say otherwise.
pub fn events_in<'a>(
    value: &'a str,
    feed: Option<Feed>,
    out: &mut Vec<FoundEvent<'a>>,
) -> Result<(), ShapeError> {
    let start = out.len();
    let r = visit(value, feed, out, 0);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn visit<'a>(
    value: &'a str,
    feed: Option<Feed>,
    out: &mut Vec<FoundEvent<'a>>,
    depth: usize,
) -> Result<(), ShapeError> {
    if depth > MAX_DEPTH {
        return Err(ShapeError::Unknown("wrappers nested too deeply"));
    }
    let text = value.trim();
    match text.as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> =
                serde_json::from_str(text).map_err(|e| ShapeError::NotJson(e.to_string()))?;
            for item in items {
                visit(item.get(), feed, out, depth + 1)?;
            }
            return Ok(());
        }
        Some(b'{') => {}
        Some(_) => {
            // Valid JSON that is not an object or array (a string, a number) is not an event.
            serde_json::from_str::<IgnoredAny>(text)
                .map_err(|e| ShapeError::NotJson(e.to_string()))?;
            return Err(ShapeError::Unknown("not a JSON object"));
        }
        None => return Err(ShapeError::NotJson("empty".into())),
    }
    let shape: Shape =
        serde_json::from_str(text).map_err(|e| ShapeError::NotJson(e.to_string()))?;
    if shape.uuid.is_some() {
        let detected = shape.feed();
        let feed = match (feed, detected) {
            (Some(expected), Ok(found)) if found != expected => {
                return Err(ShapeError::WrongFeed { expected, found })
            }
            (Some(expected), _) => expected,
            (None, detected) => detected?,
        };
        out.push(FoundEvent {
            raw: Cow::Borrowed(text),
            feed,
        });
        return Ok(());
    }
    if let Some(items) = shape.items {
        if !items.get().starts_with('[') {
            return Err(ShapeError::Unknown("a page whose items is not an array"));
        }
        let items: Vec<&RawValue> =
            serde_json::from_str(items.get()).map_err(|e| ShapeError::NotJson(e.to_string()))?;
        for item in items {
            visit_item(item.get(), feed, out, depth + 1)?;
        }
        return Ok(());
    }
    if let Some(result) = shape.result.filter(|r| r.get().starts_with('{')) {
        return visit(result.get(), feed, out, depth + 1);
    }
    if let Some(raw) = shape.splunk_raw {
        return visit_embedded(raw, "_raw", feed, out, depth);
    }
    if let Some(event) = shape.event.filter(|e| e.get().starts_with('{')) {
        if let Ok(EcsEvent {
            original: Some(original),
        }) = serde_json::from_str(event.get())
        {
            return visit_embedded(original, "event.original", feed, out, depth);
        }
    }
    if let Some(message) = shape.message {
        // Usually human text; an event only when it holds a JSON object.
        if embedded_text(message).is_ok_and(|t| t.trim_start().starts_with('{')) {
            return visit_embedded(message, "message", feed, out, depth);
        }
    }
    Err(ShapeError::Unknown("an object without a uuid"))
}

/// A page's item must be an event itself (not another wrapper).
fn visit_item<'a>(
    item: &'a str,
    feed: Option<Feed>,
    out: &mut Vec<FoundEvent<'a>>,
    depth: usize,
) -> Result<(), ShapeError> {
    let before = out.len();
    visit(item, feed, out, depth)?;
    if out.len() != before + 1 {
        return Err(ShapeError::Unknown("a page item that is not one event"));
    }
    Ok(())
}

/// A JSON string holding JSON text (`"_raw": "{\"uuid\": …}"`).
fn embedded_text(v: &RawValue) -> Result<Cow<'_, str>, String> {
    if !v.get().starts_with('"') {
        return Err("not a string".into());
    }
    serde_json::from_str::<Cow<str>>(v.get()).map_err(|e| e.to_string())
}

fn visit_embedded<'a>(
    v: &'a RawValue,
    field: &'static str,
    feed: Option<Feed>,
    out: &mut Vec<FoundEvent<'a>>,
    depth: usize,
) -> Result<(), ShapeError> {
    let text = embedded_text(v).map_err(|e| ShapeError::EmbeddedNotJson(field, e))?;
    match text {
        Cow::Borrowed(t) => visit(t, feed, out, depth + 1).map_err(|e| embedded(field, e)),
        Cow::Owned(t) => {
            // Unescaping made new text: the events found in it are owned copies.
            let mut found = Vec::new();
            visit(&t, feed, &mut found, depth + 1).map_err(|e| embedded(field, e))?;
            for e in found {
                out.push(FoundEvent {
                    raw: Cow::Owned(e.raw.into_owned()),
                    feed: e.feed,
                });
            }
            Ok(())
        }
    }
}

fn embedded(field: &'static str, e: ShapeError) -> ShapeError {
    match e {
        ShapeError::NotJson(e) => ShapeError::EmbeddedNotJson(field, e),
        other => other,
    }
}

/// One top-level JSON value of the input, or why a line holds none.
pub struct InputValue<'a> {
    /// 1-based line where the value starts.
    pub line: usize,
    pub text: Result<&'a str, ShapeError>,
    /// The bytes as read (for a rejects file), also when they are not text.
    pub raw: &'a [u8],
}

/// Reads `input` as JSON values: one per line (NDJSON, streamed), or, when the first line is
/// not a complete value and the input as a whole is, one JSON document (pretty-printed pages,
/// an array of events). Blank lines are skipped. Calls `each` per value, in order.
pub fn for_each_value<R: BufRead>(
    mut input: R,
    mut each: impl FnMut(InputValue<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut line_no = 0usize;
    // Find the first non-blank line to choose the mode.
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        line_no += 1;
        if !trim_line(&buf).iter().all(u8::is_ascii_whitespace) {
            break;
        }
    }
    let first_is_value = std::str::from_utf8(trim_line(&buf))
        .ok()
        .is_some_and(|t| serde_json::from_str::<IgnoredAny>(t).is_ok());
    if !first_is_value {
        let mut doc = std::mem::take(&mut buf);
        input.read_to_end(&mut doc)?;
        let first_line = line_no;
        if let Some(()) = document_values(&doc, first_line, &mut each)? {
            return Ok(());
        }
        // Not one document either: report line by line what is wrong.
        for (i, line) in doc.split(|b| *b == b'\n').enumerate() {
            line_value(trim_line(line), first_line + i, &mut each)?;
        }
        return Ok(());
    }
    line_value(trim_line(&buf), line_no, &mut each)?;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        line_no += 1;
        line_value(trim_line(&buf), line_no, &mut each)?;
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn line_value(
    line: &[u8],
    line_no: usize,
    each: &mut impl FnMut(InputValue<'_>) -> io::Result<()>,
) -> io::Result<()> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let text = std::str::from_utf8(line).map_err(|_| ShapeError::NotUtf8);
    each(InputValue {
        line: line_no,
        text,
        raw: line,
    })
}

/// The values of a whole-document input; `None` when it is not one (then the caller reads it
/// line by line). A document that breaks part-way, with no line a value of its own, is
/// reported once where it breaks rather than as a line-by-line flood.
fn document_values(
    doc: &[u8],
    first_line: usize,
    each: &mut impl FnMut(InputValue<'_>) -> io::Result<()>,
) -> io::Result<Option<()>> {
    let Ok(text) = std::str::from_utf8(doc) else {
        return Ok(None);
    };
    let line_at = |offset: usize| {
        first_line
            + text.as_bytes()[..offset.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
    };
    let mut values = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<&RawValue>();
    let mut offset = 0;
    loop {
        let start = offset
            + text[offset..]
                .bytes()
                .take_while(u8::is_ascii_whitespace)
                .count();
        match stream.next() {
            None => break,
            Some(Ok(v)) => {
                values.push((line_at(start), v));
                offset = stream.byte_offset();
            }
            Some(Err(e)) => {
                let any_line_is_a_value = text
                    .lines()
                    .any(|l| !l.trim().is_empty() && serde_json::from_str::<IgnoredAny>(l).is_ok());
                if any_line_is_a_value {
                    return Ok(None);
                }
                each(InputValue {
                    line: line_at(start),
                    text: Err(ShapeError::NotJson(format!(
                        "{e} (reading the input as one JSON document)"
                    ))),
                    raw: &text.as_bytes()[start.min(text.len())..],
                })?;
                return Ok(Some(()));
            }
        }
    }
    for (line, v) in values {
        each(InputValue {
            line,
            text: Ok(v.get()),
            raw: v.get().as_bytes(),
        })?;
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(value: &str, feed: Option<Feed>) -> Result<Vec<(String, Feed)>, ShapeError> {
        let mut out = Vec::new();
        events_in(value, feed, &mut out)?;
        Ok(out
            .into_iter()
            .map(|e| (e.raw.into_owned(), e.feed))
            .collect())
    }

    const SIGNIN: &str = r#"{"uuid":"S1","timestamp":"2024-01-01T00:00:00Z","category":"success","type":"credentials_ok","target_user":{"uuid":"U"}}"#;
    const USAGE: &str = r#"{"uuid":"I1","timestamp":"2024-01-01T00:00:00Z","used_version":1,"item_uuid":"it","vault_uuid":"v","action":"reveal"}"#;
    const AUDIT: &str = r#"{"uuid":"A1","timestamp":"2024-01-01T00:00:00Z","actor_uuid":"U","action":"suspend","object_type":"user","object_uuid":"O"}"#;

    #[test]
    fn tells_each_feed_by_its_fields() {
        assert_eq!(
            found(SIGNIN, None).unwrap(),
            vec![(SIGNIN.to_owned(), Feed::SignInAttempts)]
        );
        assert_eq!(found(USAGE, None).unwrap()[0].1, Feed::ItemUsages);
        assert_eq!(found(AUDIT, None).unwrap()[0].1, Feed::AuditEvents);
    }

    #[test]
    fn says_why_it_cannot_tell_the_feed() {
        let bare = r#"{"uuid":"X","timestamp":"2024-01-01T00:00:00Z"}"#;
        let e = found(bare, None).unwrap_err();
        assert_eq!(e, ShapeError::UnknownFeed);
        assert!(e.to_string().contains("pass --feed"));
        assert_eq!(
            found(bare, Some(Feed::AuditEvents)).unwrap()[0].1,
            Feed::AuditEvents,
            "--feed decides when the fields cannot"
        );
        let both = r#"{"uuid":"X","item_uuid":"i","actor_uuid":"a"}"#;
        assert!(matches!(
            found(both, None),
            Err(ShapeError::AmbiguousFeed(..))
        ));
        assert_eq!(
            found(USAGE, Some(Feed::AuditEvents)).unwrap_err(),
            ShapeError::WrongFeed {
                expected: Feed::AuditEvents,
                found: Feed::ItemUsages
            }
        );
    }

    #[test]
    fn unwraps_pages_splunk_and_ecs_documents() {
        let page = format!(r#"{{"cursor":"c","has_more":false,"items":[{USAGE},{USAGE}]}}"#);
        assert_eq!(found(&page, None).unwrap().len(), 2);
        let quoted = serde_json::to_string(AUDIT).unwrap();
        let splunk = format!(r#"{{"preview":false,"result":{{"_raw":{quoted},"_time":"x"}}}}"#);
        assert_eq!(
            found(&splunk, None).unwrap(),
            vec![(AUDIT.to_owned(), Feed::AuditEvents)],
            "the event under result._raw, byte for byte"
        );
        let bare_raw = format!(r#"{{"_raw":{quoted},"sourcetype":"1password"}}"#);
        assert_eq!(found(&bare_raw, None).unwrap()[0].0, AUDIT);
        let ecs = format!(
            r#"{{"@timestamp":"t","event":{{"original":{},"kind":"event"}}}}"#,
            serde_json::to_string(SIGNIN).unwrap()
        );
        assert_eq!(found(&ecs, None).unwrap()[0].0, SIGNIN);
        let beat = format!(
            r#"{{"@timestamp":"t","message":{}}}"#,
            serde_json::to_string(USAGE).unwrap()
        );
        assert_eq!(found(&beat, None).unwrap()[0].1, Feed::ItemUsages);
        let array = format!("[{SIGNIN},{AUDIT}]");
        assert_eq!(found(&array, None).unwrap().len(), 2);
    }

    #[test]
    fn rejects_what_is_not_an_event() {
        assert!(matches!(
            found("{\"a\":1}", None),
            Err(ShapeError::Unknown(_))
        ));
        assert!(matches!(found("42", None), Err(ShapeError::Unknown(_))));
        assert!(matches!(
            found("{\"uuid\":", None),
            Err(ShapeError::NotJson(_))
        ));
        assert!(matches!(
            found(r#"{"_raw":"{not json"}"#, None),
            Err(ShapeError::EmbeddedNotJson("_raw", _))
        ));
        let ecs_without_original =
            r#"{"@timestamp":"t","event":{"kind":"event"},"onepassword":{"uuid":"X"}}"#;
        assert!(matches!(
            found(ecs_without_original, None),
            Err(ShapeError::Unknown(_))
        ));
        // A page with one bad item yields nothing from that page (the caller reports the line).
        let page = format!(r#"{{"cursor":"c","has_more":false,"items":[{USAGE},{{"a":1}}]}}"#);
        let mut out = Vec::new();
        assert!(events_in(&page, None, &mut out).is_err());
        assert!(out.is_empty());
        let mut deep = USAGE.to_owned();
        for _ in 0..10 {
            deep = format!(r#"{{"_raw":{}}}"#, serde_json::to_string(&deep).unwrap());
        }
        assert!(found(&deep, None).is_err(), "nesting is bounded");
    }

    fn values(input: &str) -> Vec<(usize, Result<String, ShapeError>)> {
        let mut out = Vec::new();
        for_each_value(input.as_bytes(), |v| {
            out.push((v.line, v.text.map(str::to_owned)));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn reads_lines_with_their_numbers() {
        let got = values(&format!("{USAGE}\n\n{{broken\r\n{AUDIT}\n"));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (1, Ok(USAGE.to_owned())));
        assert_eq!(got[1].0, 3);
        assert_eq!(got[1].1.as_deref(), Ok("{broken"));
        assert_eq!(got[2], (4, Ok(AUDIT.to_owned())));
    }

    #[test]
    fn reads_a_pretty_printed_document() {
        let page = serde_json::json!({"cursor": "c", "has_more": true, "items": [
            serde_json::from_str::<serde_json::Value>(USAGE).unwrap()
        ]});
        let pretty = serde_json::to_string_pretty(&page).unwrap();
        let input = format!("{pretty}\n{pretty}\n");
        let got = values(&input);
        assert_eq!(got.len(), 2, "two documents: {got:?}");
        assert_eq!(got[0].0, 1);
        assert_eq!(got[1].0, pretty.lines().count() + 1);
        let mut events = Vec::new();
        events_in(got[0].1.as_ref().unwrap(), None, &mut events).unwrap();
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn a_broken_document_is_reported_once_where_it_breaks() {
        let got = values("[\n  {\"uuid\": \"a\"},\n  {\"uuid\": \n]\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, 1);
        assert!(matches!(&got[0].1, Err(ShapeError::NotJson(e)) if e.contains("line")));
    }

    #[test]
    fn a_bad_first_line_does_not_hide_good_lines() {
        let got = values(&format!("{{oops\n{USAGE}\n"));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 1);
        assert_eq!(got[1], (2, Ok(USAGE.to_owned())));
    }
}
