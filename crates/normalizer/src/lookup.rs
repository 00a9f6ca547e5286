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
    /// For an observed user, the name and email it was seen with: most events name a user
    /// the index already has, and telling "unchanged" from these costs no rendering.
    seen: Option<Box<Seen>>,
}

#[derive(Clone, Debug)]
struct Seen {
    title: Box<str>,
    email: Option<Box<str>>,
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
        let seen = (row.source == LookupSource::Observed).then(|| {
            Box::new(Seen {
                title: row.title.as_str().into(),
                email: row.email.as_deref().map(Into::into),
            })
        });
        Entry {
            rendered,
            source: row.source,
            seen,
        }
    }

    /// Whether observing the user as `title` / `email` would leave this entry as it is: it is
    /// imported (an observation never replaces that), or it was observed just so.
    pub fn unchanged_by_observing(&self, title: &str, email: Option<&str>) -> bool {
        match (&self.source, &self.seen) {
            (LookupSource::Imported, _) => true,
            (_, Some(seen)) => &*seen.title == title && seen.email.as_deref() == email,
            (_, None) => false,
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
        let new = Entry::new(&row);
        if !replaces(self.entry(row.kind, &row.uuid), &new) {
            return false;
        }
        self.put(row, new);
        true
    }

    /// Stores `entry` for `row` whatever was there: for a layer whose caller has already
    /// decided, against the layers below it, that the row wins.
    fn put(&mut self, row: LookupRow, entry: Entry) {
        self.maps[slot(row.kind)].insert(row.uuid.into_boxed_str(), entry);
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

/// Whether `new` takes the place of `existing`: it differs, and it is not an observed row
/// over an imported one.
fn replaces(existing: Option<&Entry>, new: &Entry) -> bool {
    match existing {
        None => true,
        Some(old) if old.rendered == new.rendered => false,
        Some(old) => {
            !(old.source == LookupSource::Imported && new.source == LookupSource::Observed)
        }
    }
}

/// What enrichment reads and learning writes. Implemented by the index itself (the service,
/// one page after another) and by [`Layered`] (`oprelay normalize`, chunks side by side).
pub trait Lookups {
    /// The entry of `uuid` among the rows of `kind`.
    fn entry(&self, kind: LookupKind, uuid: &str) -> Option<&Entry>;
    /// Applies a row; returns whether what [`Lookups::entry`] answers changed.
    fn upsert(&mut self, row: LookupRow) -> bool;
}

impl Lookups for LookupIndex {
    fn entry(&self, kind: LookupKind, uuid: &str) -> Option<&Entry> {
        LookupIndex::entry(self, kind, uuid)
    }

    fn upsert(&mut self, row: LookupRow) -> bool {
        LookupIndex::upsert(self, row)
    }
}

/// Rows learned on top of shared, read-only indexes: a worker normalizing a chunk of input
/// reads the rows every earlier chunk learned (`below`, nearest last) and keeps what its own
/// chunk learns in `top`, so it needs neither a lock nor a copy of a large imported table.
/// It answers exactly as one index would that had all the rows applied in order.
pub struct Layered<'a> {
    below: &'a [&'a LookupIndex],
    top: LookupIndex,
}

impl<'a> Layered<'a> {
    /// A view over `below`, searched from its last index to its first.
    pub fn new(below: &'a [&'a LookupIndex]) -> Self {
        Layered {
            below,
            top: LookupIndex::new(),
        }
    }
}

impl Lookups for Layered<'_> {
    fn entry(&self, kind: LookupKind, uuid: &str) -> Option<&Entry> {
        self.top
            .entry(kind, uuid)
            .or_else(|| self.below.iter().rev().find_map(|i| i.entry(kind, uuid)))
    }

    fn upsert(&mut self, row: LookupRow) -> bool {
        let new = Entry::new(&row);
        if !replaces(self.entry(row.kind, &row.uuid), &new) {
            return false;
        }
        self.top.put(row, new);
        true
    }
}

/// Applies rows that a [`Layered`] view already judged to win (its `learned` list, in
/// order) to the index that will sit above the ones it read.
pub fn apply_learned(index: &mut LookupIndex, rows: &[LookupRow]) {
    for row in rows {
        let entry = Entry::new(row);
        index.put(row.clone(), entry);
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

    #[test]
    fn an_observation_is_told_unchanged_exactly_as_upsert_would() {
        let mut idx = LookupIndex::new();
        let seen = |title: &str, email: Option<&str>| LookupRow {
            email: email.map(str::to_owned),
            ..row(title, LookupSource::Observed)
        };
        idx.upsert(seen("Ada", Some("ada@example.com")));
        for (title, email) in [
            ("Ada", Some("ada@example.com")),
            ("Ada", None),
            ("Ada L.", Some("ada@example.com")),
            ("Ada", Some("ada@example.org")),
        ] {
            let entry = idx.entry(LookupKind::User, "U1").unwrap().clone();
            let unchanged = entry.unchanged_by_observing(title, email);
            let mut copy = idx.clone();
            assert_eq!(
                unchanged,
                !copy.upsert(seen(title, email)),
                "{title} {email:?}"
            );
        }
        idx.upsert(row("Imported Ada", LookupSource::Imported));
        let entry = idx.entry(LookupKind::User, "U1").unwrap();
        assert!(
            entry.unchanged_by_observing("anything", None),
            "imported rows stay"
        );
    }

    fn row_of(uuid: &str, title: &str, source: LookupSource) -> LookupRow {
        LookupRow {
            uuid: uuid.into(),
            ..row(title, source)
        }
    }

    /// The same rows applied to one index, and to a layered view whose learned rows are then
    /// folded into the layer above: every answer, and every "changed", is the same.
    #[test]
    fn a_layered_view_answers_as_one_index() {
        let mut imported = LookupIndex::new();
        imported.upsert(row_of("U1", "Imported Ann", LookupSource::Imported));
        imported.upsert(row_of("U2", "seen Bob", LookupSource::Observed));
        let mut one = imported.clone();
        let mut earlier = LookupIndex::new();
        apply_learned(&mut earlier, &[row_of("U3", "Cy", LookupSource::Observed)]);
        one.upsert(row_of("U3", "Cy", LookupSource::Observed));

        let rows = [
            row_of("U1", "renamed Ann", LookupSource::Observed),
            row_of("U2", "Bob", LookupSource::Observed),
            row_of("U2", "Bob", LookupSource::Observed),
            row_of("U3", "Cy", LookupSource::Observed),
            row_of("U4", "Di", LookupSource::Observed),
            row_of("U3", "Cyrus", LookupSource::Imported),
        ];
        let below = [&imported, &earlier];
        let mut view = Layered::new(&below);
        let mut learned = Vec::new();
        for r in rows {
            let changed = view.upsert(r.clone());
            assert_eq!(changed, one.upsert(r.clone()), "{r:?}");
            if changed {
                learned.push(r);
            }
        }
        assert_eq!(
            learned.len(),
            3,
            "Bob, Di and the imported Cyrus change the view"
        );
        let uuids = ["U1", "U2", "U3", "U4", "U5"];
        for uuid in uuids {
            assert_eq!(
                view.entry(LookupKind::User, uuid).and_then(Entry::row),
                one.get(LookupKind::User, uuid),
                "{uuid}"
            );
        }
        let mut folded = earlier.clone();
        apply_learned(&mut folded, &learned);
        for uuid in uuids {
            let layered = [&imported, &folded]
                .iter()
                .rev()
                .find_map(|i| i.get(LookupKind::User, uuid));
            assert_eq!(layered, one.get(LookupKind::User, uuid), "{uuid}");
        }
    }
}
