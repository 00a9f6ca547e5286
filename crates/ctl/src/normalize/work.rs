//! Normalizing one chunk: every value of it through the normalizer service's own
//! `normalize_record`, against a view of the lookups as every earlier chunk left them.

use oprelay_events::{Feed, LookupRow};
use oprelay_format as format;
use oprelay_normalizer::event_files::{self, FoundEvent};
use oprelay_normalizer::lookup::Lookups;
use oprelay_normalizer::normalize::{normalize_record, PageContext, RejectReason};
use oprelay_service::config::OutputFormat;

use super::chunks::Chunk;

/// What does not change from one chunk to the next.
pub struct Setup<'s> {
    pub contexts: [PageContext<'s>; 3],
    /// `--feed`: the feed of every event, when given.
    pub feed: Option<Feed>,
    pub format: OutputFormat,
    pub account: String,
}

/// A normalized chunk, ready to be written in its place.
pub struct Normalized {
    pub chunk: Chunk,
    /// The version of the learned rows it was normalized against (see `commit`).
    pub version: u64,
    /// Its records, one per line, in the output format.
    pub records: Vec<u8>,
    pub per_feed: [u64; 3],
    pub rejects: Vec<Rejected>,
    /// The lookup rows its events taught, in order, each one a change to the view it read.
    pub learned: Vec<LookupRow>,
}

/// A value or event refused, with what the rejects file and stderr say of it.
pub struct Rejected {
    pub line: usize,
    pub reason: String,
    pub text: Vec<u8>,
}

pub fn feed_slot(feed: Feed) -> usize {
    match feed {
        Feed::SignInAttempts => 0,
        Feed::ItemUsages => 1,
        Feed::AuditEvents => 2,
    }
}

enum Failed {
    Normalize(RejectReason),
    Render(format::RenderError),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Normalize(r) => r.fmt(f),
            Failed::Render(e) => write!(f, "cannot render the record: {e}"),
        }
    }
}

/// Normalizes every value of `chunk`, learning into `view` as it goes (so an event is enriched
/// with what the events before it taught, as in the service).
pub fn normalize_chunk(
    setup: &Setup<'_>,
    chunk: Chunk,
    version: u64,
    view: &mut impl Lookups,
) -> Normalized {
    let mut done = Normalized {
        records: Vec::with_capacity(chunk.text.len() * 3 / 2),
        chunk: Chunk {
            values: Vec::new(),
            ..chunk
        },
        version,
        per_feed: [0; 3],
        rejects: Vec::new(),
        learned: Vec::new(),
    };
    for value in &chunk.values {
        let text = match &value.text {
            Ok(range) => &done.chunk.text[range.clone()],
            Err(bad) => {
                done.rejects.push(Rejected {
                    line: value.line,
                    reason: bad.reason.clone(),
                    text: done.chunk.unreadable[bad.raw.clone()].to_vec(),
                });
                continue;
            }
        };
        let mut job = Job {
            setup,
            view: &mut *view,
            records: &mut done.records,
            learned: &mut done.learned,
        };
        job.value(text, value.line, &mut done.per_feed, &mut done.rejects);
    }
    done.chunk.values = chunk.values;
    done
}

/// One value's worth of work, with where its results go.
struct Job<'a, 's, L> {
    setup: &'a Setup<'s>,
    view: &'a mut L,
    records: &'a mut Vec<u8>,
    learned: &'a mut Vec<LookupRow>,
}

impl<L: Lookups> Job<'_, '_, L> {
    fn value(
        &mut self,
        text: &str,
        line: usize,
        per_feed: &mut [u64; 3],
        rejects: &mut Vec<Rejected>,
    ) {
        let mut reject = |reason: String, text: &[u8]| {
            rejects.push(Rejected {
                line,
                reason,
                text: text.to_vec(),
            })
        };
        // With --feed, a line that is the API item itself (the common case, and the one
        // worth being fast for) goes straight to the normalizer: one parse, not two. Anything
        // without a uuid at the top (a page, a Splunk or Elastic wrapper) is unwrapped below.
        if let Some(feed) = self.setup.feed {
            let mark = self.records.len();
            match self.normalize(text, feed) {
                Ok(()) => {
                    per_feed[feed_slot(feed)] += 1;
                    return;
                }
                Err(Failed::Normalize(RejectReason::NoUuid | RejectReason::NotAnObject)) => {
                    self.records.truncate(mark)
                }
                Err(reason) => {
                    self.records.truncate(mark);
                    return reject(reason.to_string(), text.as_bytes());
                }
            }
        }
        let mut events: Vec<FoundEvent<'_>> = Vec::with_capacity(1);
        if let Err(e) = event_files::events_in(text, self.setup.feed, &mut events) {
            return reject(e.to_string(), text.as_bytes());
        }
        for event in &events {
            let mark = self.records.len();
            match self.normalize(&event.raw, event.feed) {
                Ok(()) => per_feed[feed_slot(event.feed)] += 1,
                Err(reason) => {
                    self.records.truncate(mark);
                    reject(reason.to_string(), event.raw.as_bytes());
                }
            }
        }
    }

    /// Normalizes one API item onto `records` (in the output format); on error `records` may
    /// hold part of it, which the caller truncates.
    fn normalize(&mut self, raw: &str, feed: Feed) -> Result<(), Failed> {
        let mark = self.records.len();
        let mut matches = [0; 3];
        normalize_record(
            raw,
            &self.setup.contexts[feed_slot(feed)],
            self.view,
            self.records,
            self.learned,
            &mut matches,
        )
        .map_err(Failed::Normalize)?;
        if self.setup.format != OutputFormat::Panther {
            let mut line = self.records.split_off(mark);
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let rec = format::render(line.into(), self.setup.format, &self.setup.account, feed)
                .map_err(Failed::Render)?;
            self.records.extend_from_slice(&rec.body);
            self.records.push(b'\n');
        }
        Ok(())
    }
}
