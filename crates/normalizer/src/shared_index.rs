//! The service's lookup index, shared by pages normalized side by side.
//!
//! Pages of a pull are normalized on several threads at once, each reading the index through a
//! [`Layered`] view (its own learned users on top), so none holds a write lock while it works.
//! What a page learned is applied when the page's turn to publish comes, in page order. A page
//! normalized while an earlier one taught a user is normalized again at its turn (the version
//! tells), so each record is enriched with everything the pages before it taught, as when
//! pages went one at a time.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use oprelay_events::{Feed, LookupRow};
use time::OffsetDateTime;

use crate::lookup::{Layered, LookupIndex};
use crate::normalize::{normalize_page, NormalizedPage, Source};

#[derive(Default)]
pub(crate) struct SharedIndex {
    inner: RwLock<Versioned>,
}

#[derive(Default)]
struct Versioned {
    index: LookupIndex,
    /// Changes each time pages' learned rows changed the index.
    learned: u64,
}

/// A normalized page and the version of the index it read.
pub(crate) struct Normalized {
    pub page: NormalizedPage,
    pub version: u64,
}

impl SharedIndex {
    fn read(&self) -> RwLockReadGuard<'_, Versioned> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Versioned> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Normalizes a raw page against the index as it is now, without changing it.
    pub fn normalize(
        &self,
        body: &[u8],
        feed: Feed,
        source: &Source,
        parse_time: OffsetDateTime,
    ) -> Normalized {
        let current = self.read();
        let below = [&current.index];
        let mut view = Layered::new(&below);
        Normalized {
            page: normalize_page(body, feed, source, &mut view, parse_time),
            version: current.learned,
        }
    }

    /// The version a page must have read to be published as it is.
    pub fn version(&self) -> u64 {
        self.read().learned
    }

    /// Applies the rows a page learned, at its turn.
    pub fn learn(&self, rows: &[LookupRow]) {
        if rows.is_empty() {
            return;
        }
        let mut current = self.write();
        let mut changed = false;
        for row in rows {
            changed |= current.index.upsert(row.clone());
        }
        if changed {
            current.learned += 1;
        }
    }

    /// Changes the index from outside the pages (imported rows, removals).
    pub fn update<T>(&self, change: impl FnOnce(&mut LookupIndex) -> T) -> T {
        change(&mut self.write().index)
    }

    pub fn len(&self) -> usize {
        self.read().index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oprelay_events::{LookupKind, LookupSource};
    use time::macros::datetime;

    const SIGNIN: &str = r#"{"uuid":"S1","timestamp":"2024-01-01T00:00:00Z","category":"success","type":"credentials_ok","target_user":{"uuid":"U1","name":"Ann","email":"ann@example.com"}}"#;

    fn page(items: &[&str]) -> Vec<u8> {
        format!(
            r#"{{"cursor":"c","has_more":false,"items":[{}]}}"#,
            items.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn pages_read_without_changing_and_learn_at_their_turn() {
        let shared = SharedIndex::default();
        let source = Source::for_account("acme", None, None);
        let at = datetime!(2024-06-01 12:00 UTC);
        let first = shared.normalize(&page(&[SIGNIN]), Feed::SignInAttempts, &source, at);
        assert_eq!(first.page.learned.len(), 1, "the sign-in names Ann");
        assert!(
            shared.read().index.is_empty(),
            "normalizing changes nothing"
        );
        // A second page read alongside, before the first's turn, read the same version.
        let second = shared.normalize(&page(&[SIGNIN]), Feed::SignInAttempts, &source, at);
        assert_eq!(second.version, first.version);

        assert_eq!(
            first.version,
            shared.version(),
            "the first is current at its turn"
        );
        shared.learn(&first.page.learned);
        assert_ne!(
            second.version,
            shared.version(),
            "the second must be redone"
        );
        assert_eq!(
            shared
                .read()
                .index
                .get(LookupKind::User, "U1")
                .map(|r| r.title),
            Some("Ann".to_owned())
        );
        let redone = shared.normalize(&page(&[SIGNIN]), Feed::SignInAttempts, &source, at);
        assert!(redone.page.learned.is_empty(), "Ann is known now");
        let version = shared.version();
        shared.learn(&redone.page.learned);
        shared.learn(&[LookupRow {
            uuid: "U1".into(),
            kind: LookupKind::User,
            title: "Ann".into(),
            email: Some("ann@example.com".into()),
            updated_at: None,
            source: LookupSource::Observed,
        }]);
        assert_eq!(
            shared.version(),
            version,
            "rows that change nothing keep the version"
        );
    }
}
