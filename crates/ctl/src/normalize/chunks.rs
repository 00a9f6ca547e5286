//! The reading side of `oprelay normalize`: input values copied into chunks of about
//! [`CHUNK_BYTES`], so workers can normalize them side by side while the input is still read.

use std::io::{self, BufRead};
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use oprelay_normalizer::event_files::{self, InputValue};

/// About this much input text per chunk: large enough that handing a chunk to a worker costs
/// nothing next to normalizing it (a few hundred events), small enough that two workers and
/// the chunks waiting for them stay within a few MiB.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A run of input values, in input order, owned so a worker thread can take it.
pub struct Chunk {
    /// Its place in the output: chunks are written in this order.
    pub seq: u64,
    /// The input it came from, as rejects name it.
    pub input: Arc<str>,
    /// The readable values' text, back to back.
    pub text: String,
    /// Why unreadable values were refused, and their bytes, back to back.
    pub unreadable: Vec<u8>,
    pub values: Vec<ChunkValue>,
}

/// One input value of a chunk.
pub struct ChunkValue {
    /// The 1-based line it starts on.
    pub line: usize,
    pub text: Result<Range<usize>, Unreadable>,
}

/// A value that is not text, kept for the rejects file.
pub struct Unreadable {
    pub reason: String,
    pub raw: Range<usize>,
}

impl Chunk {
    fn new(seq: u64, input: Arc<str>) -> Self {
        Chunk {
            seq,
            input,
            text: String::new(),
            unreadable: Vec::new(),
            values: Vec::new(),
        }
    }

    fn push(&mut self, value: InputValue<'_>) {
        let text = match value.text {
            Ok(t) => {
                let start = self.text.len();
                self.text.push_str(t);
                Ok(start..self.text.len())
            }
            Err(e) => {
                let start = self.unreadable.len();
                self.unreadable.extend_from_slice(value.raw);
                Err(Unreadable {
                    reason: e.to_string(),
                    raw: start..self.unreadable.len(),
                })
            }
        };
        self.values.push(ChunkValue {
            line: value.line,
            text,
        });
    }

    fn size(&self) -> usize {
        self.text.len() + self.unreadable.len()
    }
}

/// Cuts one input into chunks and sends each on `to_workers`, taking a token from `slots`
/// first, so no more chunks are in flight (read, in a worker, or waiting to be written) than
/// tokens exist. Stops early, without an error, when the writing side has gone (it reports
/// why itself).
pub struct Chunker<'a> {
    pub to_workers: &'a SyncSender<Chunk>,
    pub slots: &'a Receiver<()>,
    pub chunk_bytes: usize,
    pub next_seq: u64,
}

impl Chunker<'_> {
    /// Reads `reader` to its end (or until the writing side has gone); returns whether the
    /// writing side is still there.
    pub fn read(&mut self, input: Arc<str>, reader: impl BufRead) -> io::Result<bool> {
        let mut chunk = Chunk::new(self.next_seq, input.clone());
        let mut open = true;
        let read = event_files::for_each_value(reader, |value| {
            chunk.push(value);
            if chunk.size() >= self.chunk_bytes {
                let next = Chunk::new(chunk.seq + 1, input.clone());
                open = self.send(std::mem::replace(&mut chunk, next));
                if !open {
                    // Stops the reading; told apart from a real error below.
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
            }
            Ok(())
        });
        match read {
            Err(_) if !open => return Ok(false),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        if chunk.values.is_empty() {
            self.next_seq = chunk.seq;
            return Ok(true);
        }
        Ok(self.send(chunk))
    }

    fn send(&mut self, chunk: Chunk) -> bool {
        self.next_seq = chunk.seq + 1;
        self.slots.recv().is_ok() && self.to_workers.send(chunk).is_ok()
    }
}
