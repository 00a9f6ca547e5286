//! The writing side of `oprelay normalize`: chunks written in input order, and the lookup rows
//! they learned made visible to the chunks after them.
//!
//! Why this is exact: an event is enriched with the rows every event before it taught (an
//! audit event's actor named by an earlier sign-in). Workers normalize chunks side by side,
//! each against the rows learned as of the last chunk written when it started, plus its own.
//! A chunk whose view was already current when it is its turn (nothing was learned in
//! between: the version is unchanged) is written as it is; otherwise it is normalized again,
//! here, against the current rows. Learning stops once the people of a file are known, so
//! after the first chunks almost every chunk is written as its worker made it, and the output
//! is byte for byte what one thread would have written.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use oprelay_normalizer::lookup::{apply_learned, Layered, LookupIndex};

use super::rejects::Rejects;
use super::work::{normalize_chunk, Normalized, Setup};

/// The rows learned so far, and a version that changes whenever they do.
#[derive(Clone, Default)]
pub struct Learned {
    pub rows: Arc<LookupIndex>,
    pub version: u64,
}

/// The learned rows as the workers read them: a worker takes a copy of the `Arc` when it
/// starts a chunk and never holds the lock while it works.
#[derive(Default)]
pub struct Shared(Mutex<Learned>);

impl Shared {
    pub fn current(&self) -> Learned {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn publish(&self, learned: Learned) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = learned;
    }
}

/// What the whole run counted.
#[derive(Debug, Default)]
pub struct Counts {
    pub per_feed: [u64; 3],
    pub rejected: u64,
    /// Chunks normalized a second time because rows were learned while they were out.
    pub redone: u64,
}

/// Writes normalized chunks in order.
pub struct Committer<'a, 's, W> {
    pub setup: &'a Setup<'s>,
    pub imported: &'a LookupIndex,
    pub shared: &'a Shared,
    pub out: W,
    pub rejects: &'a mut Rejects,
    pub counts: Counts,
    /// Chunks that arrived before their turn.
    waiting: BTreeMap<u64, Normalized>,
    next: u64,
    learned: Learned,
}

impl<'a, 's, W: Write> Committer<'a, 's, W> {
    pub fn new(
        setup: &'a Setup<'s>,
        imported: &'a LookupIndex,
        shared: &'a Shared,
        out: W,
        rejects: &'a mut Rejects,
    ) -> Self {
        Committer {
            setup,
            imported,
            shared,
            out,
            rejects,
            counts: Counts::default(),
            waiting: BTreeMap::new(),
            next: 0,
            learned: shared.current(),
        }
    }

    /// Takes a normalized chunk; writes it and every chunk it was holding up. Returns how
    /// many chunks were written (each frees a slot for the reader).
    pub fn take(&mut self, done: Normalized) -> io::Result<usize> {
        self.waiting.insert(done.chunk.seq, done);
        let mut written = 0;
        while let Some(done) = self.waiting.remove(&self.next) {
            self.write(done)?;
            self.next += 1;
            written += 1;
        }
        Ok(written)
    }

    /// Chunks still waiting for an earlier one (none after a complete run).
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }

    fn write(&mut self, mut done: Normalized) -> io::Result<()> {
        if done.version != self.learned.version {
            self.counts.redone += 1;
            let below = [self.imported, &*self.learned.rows];
            let mut view = Layered::new(&below);
            done = normalize_chunk(self.setup, done.chunk, self.learned.version, &mut view);
        }
        if !done.learned.is_empty() {
            // Workers and the shared slot still read the current rows: the next version is a
            // copy with this chunk's rows applied (the learned layer is small: people seen).
            let mut rows = LookupIndex::clone(&self.learned.rows);
            apply_learned(&mut rows, &done.learned);
            self.learned = Learned {
                rows: Arc::new(rows),
                version: self.learned.version + 1,
            };
            self.shared.publish(self.learned.clone());
        }
        self.out.write_all(&done.records)?;
        for (i, n) in done.per_feed.iter().enumerate() {
            self.counts.per_feed[i] += n;
        }
        for r in &done.rejects {
            self.counts.rejected += 1;
            self.rejects
                .record(&done.chunk.input, r.line, &r.reason, &r.text)?;
        }
        Ok(())
    }
}
