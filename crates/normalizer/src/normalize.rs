//! Raw page bytes in, Panther-normalized NDJSON out: the one implementation behind both the
//! normalizer service and `oprelay normalize`.
//!
//! The hot path never builds a tree of the event. Each item is read once into a borrowed "peek"
//! of the few fields normalization needs (uuid, timestamp, IPs, emails, selector UUIDs), and the
//! output record is the item's own JSON text with the `p_*` fields appended before its closing
//! brace. That keeps every original field byte-for-byte as 1Password sent it — order, number
//! formatting, unknown fields — and costs little more than reading the page.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use oprelay_events::{
    format_panther, Feed, LogType, LookupKind, LookupRow, LookupSource, Page, Timestamp,
    ENRICHMENT_TABLE,
};

use crate::lookup::{Entry, LookupIndex};

/// Which account the records belong to, as `p_source_id` / `p_source_label` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub id: String,
    pub label: String,
}

impl Source {
    /// The account's configured id and label, or a stable UUID derived from its name.
    pub fn for_account(account: &str, id: Option<&str>, label: Option<&str>) -> Source {
        Source {
            id: id
                .map(str::to_owned)
                .unwrap_or_else(|| derived_source_id(account)),
            label: label.unwrap_or(account).to_owned(),
        }
    }
}

/// A UUID (RFC 4122 layout, name-based) derived from the account name, so `p_source_id` is
/// stable across restarts and replicas without configuration.
pub fn derived_source_id(account: &str) -> String {
    let d = Sha256::digest(format!("oprelay-source:{account}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    oprelay_events::uuid_text(b)
}

/// `p_row_id`: lower-case hex, a function of the log type and the event uuid only, so the
/// same event normalized twice (a replay, a re-ingest) gets the same id and lands on the same
/// Elasticsearch document.
pub fn row_id(log_type: LogType, uuid: &str) -> String {
    let mut h = Sha256::new();
    h.update(log_type.as_str().as_bytes());
    h.update([0]);
    h.update(uuid.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Why a record (or a whole page) went to the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejectReason {
    PageNotJson(String),
    NotAnEnvelope(String),
    NotAnObject,
    NoUuid,
    BadTimestamp(String),
}

impl RejectReason {
    /// Every value of [`RejectReason::label`], plus `too_large` (a record bigger than a bus
    /// message): the service creates each `reason` series at 0 when it starts.
    pub const LABELS: [&'static str; 6] = [
        "page_not_json",
        "not_an_envelope",
        "not_an_object",
        "no_uuid",
        "bad_timestamp",
        "too_large",
    ];

    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::PageNotJson(_) => "page_not_json",
            RejectReason::NotAnEnvelope(_) => "not_an_envelope",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::NoUuid => "no_uuid",
            RejectReason::BadTimestamp(_) => "bad_timestamp",
        }
    }

    pub fn is_page(&self) -> bool {
        matches!(
            self,
            RejectReason::PageNotJson(_) | RejectReason::NotAnEnvelope(_)
        )
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::PageNotJson(e) => write!(f, "page is not valid JSON: {e}"),
            RejectReason::NotAnEnvelope(e) => {
                write!(f, "page is not a {{cursor, has_more, items}} envelope: {e}")
            }
            RejectReason::NotAnObject => f.write_str("record is not a JSON object"),
            RejectReason::NoUuid => f.write_str("record has no uuid"),
            RejectReason::BadTimestamp(t) => write!(f, "timestamp {t} is not an RFC 3339 time"),
        }
    }
}

/// One record or page that could not be normalized, with the bytes as received.
#[derive(Clone, Debug, PartialEq)]
pub struct Reject {
    pub body: Vec<u8>,
    pub reason: RejectReason,
}

/// The result of normalizing one page.
#[derive(Debug, Default)]
pub struct NormalizedPage {
    /// One record per line, page order.
    pub ndjson: Vec<u8>,
    pub count: usize,
    pub max_event_time: Option<OffsetDateTime>,
    /// Each record's event time, in line order (for splitting a page across messages).
    pub event_times: Vec<OffsetDateTime>,
    /// Each record's raw item size in bytes, in line order: parts are cut by these, so the
    /// cut does not depend on the lookups (see [`crate::parts`]).
    pub raw_sizes: Vec<usize>,
    pub rejects: Vec<Reject>,
    /// Users the page revealed that changed the index; the service persists them.
    pub learned: Vec<LookupRow>,
    /// Enrichment matches per selector, for metrics.
    pub matches: Vec<(&'static str, usize)>,
}

// ---------------------------------------------------------------------------------------------
// The peek: the few fields normalization reads, borrowed from the page, tolerant of wrong types.

/// A string field: absent or null, a string, or something else (kept out of the derived fields).
#[derive(Default, Debug)]
enum Str<'a> {
    #[default]
    Missing,
    Text(Cow<'a, str>),
    Other,
}

impl<'a> Str<'a> {
    fn text(&self) -> Option<&str> {
        match self {
            Str::Text(t) => Some(t),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str::Text(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Str::Missing)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Str::Missing)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Str::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Str::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Str::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Str::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Str::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Str::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A sub-object: read when it is an object, ignored when it is anything else.
#[derive(Debug)]
struct Obj<T>(Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m)).map(|t| Obj(Some(t)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Obj(None))
            }
            fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct PeekUser<'a> {
    #[serde(borrow)]
    uuid: Str<'a>,
    #[serde(borrow)]
    name: Str<'a>,
    #[serde(borrow)]
    email: Str<'a>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct PeekClient<'a> {
    #[serde(borrow)]
    ip_address: Str<'a>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct PeekSession<'a> {
    #[serde(borrow)]
    ip: Str<'a>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct Peek<'a> {
    #[serde(borrow)]
    uuid: Str<'a>,
    #[serde(borrow)]
    timestamp: Str<'a>,
    #[serde(borrow)]
    client: Obj<PeekClient<'a>>,
    #[serde(borrow)]
    session: Obj<PeekSession<'a>>,
    #[serde(borrow)]
    user: Obj<PeekUser<'a>>,
    #[serde(borrow)]
    target_user: Obj<PeekUser<'a>>,
    #[serde(borrow)]
    actor_details: Obj<PeekUser<'a>>,
    #[serde(borrow)]
    object_details: Obj<PeekUser<'a>>,
    #[serde(borrow)]
    aux_details: Obj<PeekUser<'a>>,
    #[serde(borrow)]
    item_uuid: Str<'a>,
    #[serde(borrow)]
    vault_uuid: Str<'a>,
    #[serde(borrow)]
    actor_uuid: Str<'a>,
    #[serde(borrow)]
    object_uuid: Str<'a>,
    #[serde(borrow)]
    object_type: Str<'a>,
    #[serde(borrow)]
    aux_uuid: Str<'a>,
}

impl<'a> Peek<'a> {
    fn users(&self) -> impl Iterator<Item = &PeekUser<'a>> {
        [
            &self.user,
            &self.target_user,
            &self.actor_details,
            &self.object_details,
            &self.aux_details,
        ]
        .into_iter()
        .filter_map(|u| u.0.as_ref())
    }
}

// ---------------------------------------------------------------------------------------------

/// The enrichment selectors of each log type: (selector path, kind to look up, value).
fn selectors<'p>(
    log_type: LogType,
    p: &'p Peek<'_>,
) -> Vec<(&'static str, Option<LookupKind>, &'p str)> {
    let user_uuid = |u: &'p Obj<PeekUser<'_>>| u.0.as_ref().and_then(|u| u.uuid.text());
    let mut out = Vec::with_capacity(3);
    let mut push = |path: &'static str, kind: Option<LookupKind>, v: Option<&'p str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.push((path, kind, v));
        }
    };
    match log_type {
        LogType::ItemUsage => {
            push("item_uuid", Some(LookupKind::Item), p.item_uuid.text());
            push("vault_uuid", Some(LookupKind::Vault), p.vault_uuid.text());
            push("user.uuid", Some(LookupKind::User), user_uuid(&p.user));
        }
        LogType::SignInAttempt => push(
            "target_user.uuid",
            Some(LookupKind::User),
            user_uuid(&p.target_user),
        ),
        LogType::AuditEvent => {
            push("actor_uuid", Some(LookupKind::User), p.actor_uuid.text());
            let object_kind = match p.object_type.text() {
                Some("user") => Some(LookupKind::User),
                Some("vault") => Some(LookupKind::Vault),
                Some("item") => Some(LookupKind::Item),
                Some("group") | Some("gm") => Some(LookupKind::Group),
                // Other objects: whichever kind knows the UUID.
                _ => None,
            };
            push("object_uuid", object_kind, p.object_uuid.text());
            push("aux_uuid", Some(LookupKind::User), p.aux_uuid.text());
        }
    }
    out
}

fn find<'i>(index: &'i LookupIndex, kind: Option<LookupKind>, uuid: &str) -> Option<&'i Entry> {
    match kind {
        Some(k) => index.entry(k, uuid),
        None => LookupKind::ALL.iter().find_map(|k| index.entry(*k, uuid)),
    }
}

fn valid_email(s: &str) -> Option<&str> {
    let s = s.trim();
    let (local, domain) = s.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(s)
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
    pub log_type: LogType,
    pub source: &'s Source,
    pub parse_time: OffsetDateTime,
    /// `p_parse_time`, rendered once per page.
    parse_time_text: String,
    source_text: String,
}

impl<'s> PageContext<'s> {
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
pub fn normalize_record(
    raw: &str,
    ctx: &PageContext<'_>,
    index: &mut LookupIndex,
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
    let event_time = match &peek.timestamp {
        Str::Missing => ctx.parse_time,
        Str::Text(t) => Timestamp::parse(t)
            .map_err(|_| RejectReason::BadTimestamp(format!("`{t}`")))?
            .instant(),
        Str::Other => return Err(RejectReason::BadTimestamp("(not a string)".into())),
    };

    // Learn the users this record names, before enriching, so the record itself benefits.
    for u in peek.users() {
        if let (Some(id), Some(name)) = (u.uuid.text(), u.name.text()) {
            if id.is_empty() || name.is_empty() {
                continue;
            }
            let row = LookupRow {
                uuid: id.to_owned(),
                kind: LookupKind::User,
                title: name.to_owned(),
                email: u.email.text().and_then(valid_email).map(str::to_owned),
                updated_at: None,
                source: LookupSource::Observed,
            };
            if index.upsert(row.clone()) {
                learned.push(row);
            }
        }
    }

    // The original record, byte for byte, minus its closing brace (and any line breaks, which
    // JSON only allows between tokens, so NDJSON stays one record per line).
    let body = &trimmed[..trimmed.len() - 1];
    let has_p_keys = trimmed.contains("\"p_");
    let rewritten;
    let body: &str = if has_p_keys {
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
    if body.contains(['\n', '\r']) {
        out.extend(body.bytes().filter(|b| *b != b'\n' && *b != b'\r'));
    } else {
        out.extend_from_slice(body.as_bytes());
    }
    let empty = out[start..].iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !empty {
        out.push(b',');
    }
    let _ = write!(
        out,
        "\"p_log_type\":\"{}\",\"p_row_id\":\"{}\",\"p_event_time\":\"{}\",\"p_parse_time\":\"{}\"",
        ctx.log_type,
        row_id(ctx.log_type, uuid),
        format_panther(event_time),
        ctx.parse_time_text
    );
    out.extend_from_slice(ctx.source_text.as_bytes());

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

    let mut first = true;
    let names = selector_names(ctx.log_type);
    for (path, kind, value) in selectors(ctx.log_type, &peek) {
        let Some(entry) = find(index, kind, value) else {
            continue;
        };
        if first {
            let _ = write!(out, ",\"p_enrichment\":{{\"{ENRICHMENT_TABLE}\":{{");
            first = false;
        } else {
            out.push(b',');
        }
        let _ = write!(out, "\"{path}\":");
        out.extend_from_slice(entry.rendered.as_bytes());
        if let Some(m) = names
            .iter()
            .position(|n| *n == path)
            .and_then(|i| matches.get_mut(i))
        {
            *m += 1;
        }
    }
    if !first {
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"}\n");
    Ok(event_time)
}

/// Normalizes a raw API page of `feed`.
pub fn normalize_page(
    body: &[u8],
    feed: Feed,
    source: &Source,
    index: &mut LookupIndex,
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

fn selector_names(log_type: LogType) -> &'static [&'static str] {
    match log_type {
        LogType::ItemUsage => &["item_uuid", "vault_uuid", "user.uuid"],
        LogType::SignInAttempt => &["target_user.uuid"],
        LogType::AuditEvent => &["actor_uuid", "object_uuid", "aux_uuid"],
    }
}

#[cfg(test)]
mod reason_tests {
    use super::RejectReason;

    #[test]
    fn every_reason_label_is_created_at_start() {
        for r in [
            RejectReason::PageNotJson(String::new()),
            RejectReason::NotAnEnvelope(String::new()),
            RejectReason::NotAnObject,
            RejectReason::NoUuid,
            RejectReason::BadTimestamp(String::new()),
        ] {
            assert!(RejectReason::LABELS.contains(&r.label()), "{r:?}");
        }
    }
}
