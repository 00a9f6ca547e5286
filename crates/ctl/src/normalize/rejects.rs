//! Where refused values go: stderr (the first [`STDERR_REJECT_LIMIT`]) and, with `--rejects`,
//! a file of them, one per line.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Rejects reported in full on stderr; after that they are only counted (and still written to
/// `--rejects`), so a file of a million bad lines does not bury the summary.
const STDERR_REJECT_LIMIT: usize = 1000;

pub struct Rejects {
    file: Option<BufWriter<File>>,
    path: Option<PathBuf>,
    reported: usize,
}

impl Rejects {
    /// Creates the rejects file, when one is asked for.
    pub fn create(path: Option<&Path>) -> anyhow::Result<Self> {
        let file = match path {
            Some(p) => Some(BufWriter::new(
                File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
            )),
            None => None,
        };
        Ok(Rejects {
            file,
            path: path.map(Path::to_path_buf),
            reported: 0,
        })
    }

    pub fn record(
        &mut self,
        input: &str,
        line: usize,
        reason: &str,
        text: &[u8],
    ) -> io::Result<()> {
        if self.reported < STDERR_REJECT_LIMIT {
            eprintln!("{input}:{line}: rejected: {reason}");
        } else if self.reported == STDERR_REJECT_LIMIT {
            eprintln!(
                "oprelay: more rejects follow; only counted from here{}",
                self.path
                    .as_ref()
                    .map(|p| format!(" (all are in {})", p.display()))
                    .unwrap_or_default()
            );
        }
        self.reported += 1;
        if let Some(f) = &mut self.file {
            // One line per reject, so the file can be fixed and fed back in.
            let text: Vec<u8> = text
                .iter()
                .copied()
                .filter(|b| *b != b'\n' && *b != b'\r')
                .collect();
            f.write_all(&text)?;
            f.write_all(b"\n")?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}
