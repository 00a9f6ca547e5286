//! The in-memory UUID → name index that enrichment reads.
//!
//! One map per kind, keyed by the UUID, so a lookup is a single hash of a borrowed `&str`.
//! Imported rows always win over observed ones: an operator's `op user list` is authoritative,
//! the names the event stream reveals only fill gaps.

use std::collections::HashMap;

use serde::Serialize;

use oprelay_events::{LookupKind, LookupRow, LookupSource};

#[derive(Default, Clone)]
pub struct LookupIndex {
    maps: [HashMap<Box<str>, Entry>; 4],
}

/// A row as the JSON object `p_enrichment` shows for it. Lookups match UUIDs exactly, so
/// `p_match` is the row's own UUID and the whole object can be rendered once when the row
/// arrives instead of for every event that names it (most events name three). The rendered
/// text is all the index keeps of a row: the row itself is read back from it when asked for,
/// which is rare (listing, tests), so 100 000 rows stay under 50 MiB.
#[derive(Clone, Debug)]
pub struct Entry {
    pub rendered: Box<str>,
    source: LookupSource,
}

#[derive(Serialize)]
struct EnrichmentOut<'a> {
    uuid: &'a str,
    kind: LookupKind,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    source: LookupSource,
    p_match: &'a str,
}

impl Entry {
    /// The row this entry was rendered from.
    pub fn row(&self) -> Option<LookupRow> {
        serde_json::from_str(&self.rendered).ok()
    }

    fn new(row: &LookupRow) -> Entry {
        let rendered = serde_json::to_string(&EnrichmentOut {
            uuid: &row.uuid,
            kind: row.kind,
            title: &row.title,
            updated_at: row.updated_at.as_deref(),
            email: row.email.as_deref(),
            source: row.source,
            p_match: &row.uuid,
        })
        .unwrap_or_else(|_| "{}".into())
        .into_boxed_str();
        Entry {
            rendered,
            source: row.source,
        }
    }
}

fn slot(kind: LookupKind) -> usize {
    match kind {
        LookupKind::Item => 0,
        LookupKind::Vault => 1,
        LookupKind::User => 2,
        LookupKind::Group => 3,
    }
}

impl LookupIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.maps.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, kind: LookupKind, uuid: &str) -> Option<LookupRow> {
        self.entry(kind, uuid).and_then(Entry::row)
    }

    pub fn entry(&self, kind: LookupKind, uuid: &str) -> Option<&Entry> {
        self.maps[slot(kind)].get(uuid)
    }

    /// Applies a row; returns whether the index changed. An observed row never replaces an
    /// imported one.
    pub fn upsert(&mut self, row: LookupRow) -> bool {
        let map = &mut self.maps[slot(row.kind)];
        let new = Entry::new(&row);
        match map.get(row.uuid.as_str()) {
            Some(existing) if existing.rendered == new.rendered => false,
            Some(existing)
                if existing.source == LookupSource::Imported
                    && row.source == LookupSource::Observed =>
            {
                false
            }
            _ => {
                map.insert(row.uuid.into_boxed_str(), new);
                true
            }
        }
    }

    pub fn remove(&mut self, kind: LookupKind, uuid: &str) {
        self.maps[slot(kind)].remove(uuid);
    }

    /// Every row, for listing.
    pub fn rows(&self) -> impl Iterator<Item = LookupRow> + '_ {
        self.maps
            .iter()
            .flat_map(|m| m.values().filter_map(Entry::row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(title: &str, source: LookupSource) -> LookupRow {
        LookupRow {
            uuid: "U1".into(),
            kind: LookupKind::User,
            title: title.into(),
            email: None,
            updated_at: None,
            source,
        }
    }

    #[test]
    fn imported_rows_win_over_observed() {
        let mut idx = LookupIndex::new();
        assert!(idx.upsert(row("seen", LookupSource::Observed)));
        assert!(
            !idx.upsert(row("seen", LookupSource::Observed)),
            "no change"
        );
        assert!(idx.upsert(row("Imported Name", LookupSource::Imported)));
        assert!(!idx.upsert(row("renamed in stream", LookupSource::Observed)));
        assert_eq!(
            idx.get(LookupKind::User, "U1").unwrap().title,
            "Imported Name"
        );
        assert!(
            idx.get(LookupKind::Item, "U1").is_none(),
            "kinds are separate"
        );
        idx.remove(LookupKind::User, "U1");
        assert!(idx.is_empty());
    }
}
