//! Enrichment: which UUIDs of an event are looked up (the selectors of each log type), and the
//! `p_enrichment` object written from the rows that matched.

use std::io::Write;

use oprelay_events::{LogType, LookupKind, ENRICHMENT_TABLE};

use super::peek::{Obj, Peek, PeekUser};
use crate::lookup::{Entry, Lookups};

/// The selector paths of each log type, in the order their match counts are kept.
pub(super) fn selector_names(log_type: LogType) -> &'static [&'static str] {
    match log_type {
        LogType::ItemUsage => &["item_uuid", "vault_uuid", "user.uuid"],
        LogType::SignInAttempt => &["target_user.uuid"],
        LogType::AuditEvent => &["actor_uuid", "object_uuid", "aux_uuid"],
    }
}

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

fn find<'i>(index: &'i impl Lookups, kind: Option<LookupKind>, uuid: &str) -> Option<&'i Entry> {
    match kind {
        Some(k) => index.entry(k, uuid),
        None => LookupKind::ALL.iter().find_map(|k| index.entry(*k, uuid)),
    }
}

/// Writes `,"p_enrichment":{…}` for the selectors that matched a row (nothing when none did),
/// counting the matches per selector in `matches` (in [`selector_names`] order).
pub(super) fn write_enrichment(
    out: &mut Vec<u8>,
    log_type: LogType,
    peek: &Peek<'_>,
    index: &impl Lookups,
    matches: &mut [usize; 3],
) {
    let mut first = true;
    let names = selector_names(log_type);
    for (path, kind, value) in selectors(log_type, peek) {
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
}
