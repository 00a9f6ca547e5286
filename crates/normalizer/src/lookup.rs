//! The in-memory UUID → name index that enrichment reads.
//!
//! One map per kind, keyed by the UUID, so a lookup is a single hash of a borrowed `&str`.
//! Imported rows always win over observed ones: an operator's `op user list` is authoritative,
//! the names the event stream reveals only fill gaps.

use std::collections::HashMap;

use oprelay_events::{LookupKind, LookupRow, LookupSource};

#[derive(Default, Clone)]
pub struct LookupIndex {
    maps: [HashMap<Box<str>, LookupRow>; 4],
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

    pub fn get(&self, kind: LookupKind, uuid: &str) -> Option<&LookupRow> {
        self.maps[slot(kind)].get(uuid)
    }

    /// Applies a row; returns whether the index changed. An observed row never replaces an
    /// imported one.
    pub fn upsert(&mut self, row: LookupRow) -> bool {
        let map = &mut self.maps[slot(row.kind)];
        match map.get(row.uuid.as_str()) {
            Some(existing) if existing == &row => false,
            Some(existing)
                if existing.source == LookupSource::Imported
                    && row.source == LookupSource::Observed =>
            {
                false
            }
            _ => {
                map.insert(row.uuid.clone().into_boxed_str(), row);
                true
            }
        }
    }

    pub fn remove(&mut self, kind: LookupKind, uuid: &str) {
        self.maps[slot(kind)].remove(uuid);
    }

    /// Every row, for listing.
    pub fn rows(&self) -> impl Iterator<Item = &LookupRow> {
        self.maps.iter().flat_map(|m| m.values())
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
