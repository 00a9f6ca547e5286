//! NDJSON appended to a file, rotated by size, synced to disk before the batch counts as
//! delivered.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Mutex;

use oprelay_service::config::FileConfig;

use super::{Outcome, SetupError, SinkError};
use oprelay_format::Record;

pub struct FileSink {
    path: PathBuf,
    max_bytes: Option<u64>,
    file: Arc<Mutex<Option<File>>>,
}

impl FileSink {
    pub fn new(config: &FileConfig) -> Result<FileSink, SetupError> {
        Ok(FileSink {
            path: config.path.clone(),
            max_bytes: config.max_bytes.map(|b| b.0),
            file: Arc::new(Mutex::new(None)),
        })
    }

    /// `oprelay config check --online`: the file's directory exists and is writable (checked
    /// by creating and removing a probe file beside it; the sink's file is not touched).
    pub async fn healthcheck(&self) -> Result<String, SinkError> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let probe = dir.join(format!(".oprelay-check-{}", std::process::id()));
        tokio::fs::write(&probe, b"").await.map_err(|e| {
            SinkError::needs_operator(format!("cannot write in {}: {e}", dir.display()))
        })?;
        let _ = tokio::fs::remove_file(&probe).await;
        Ok(format!("{} is writable", dir.display()))
    }

    pub async fn send(&self, records: &[&Record]) -> Result<Outcome, SinkError> {
        // The records' own bytes, shared rather than gathered into one buffer: the kernel
        // reads them where they are (vectored writes), so a batch is never held twice.
        let lines: Vec<Bytes> = records.iter().map(|r| r.body.clone()).collect();
        let mut guard = self.file.clone().lock_owned().await;
        let path = self.path.clone();
        let max = self.max_bytes;
        tokio::task::spawn_blocking(move || write_synced(&mut guard, &path, max, &lines))
            .await
            .map_err(|e| SinkError::transient(format!("file writer task failed: {e}")))?
            .map_err(|e| {
                SinkError::transient(format!("cannot write {}: {e}", self.path.display()))
            })?;
        Ok(Outcome::Delivered)
    }
}

fn open(path: &PathBuf) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Appends the lines, each with a newline, rotating whenever the next line would take the file
/// past `max`, and syncs before returning: a batch is delivered only once it is on disk.
fn write_synced(
    slot: &mut Option<File>,
    path: &PathBuf,
    max: Option<u64>,
    lines: &[Bytes],
) -> std::io::Result<()> {
    let result = (|| {
        let mut file = match slot.take() {
            Some(f) => f,
            None => open(path)?,
        };
        let mut len = file.metadata()?.len();
        // The first line not written yet.
        let mut unwritten = 0;
        for (i, line) in lines.iter().enumerate() {
            let size = line.len() as u64 + 1;
            if max.is_some_and(|m| len > 0 && len + size > m) {
                write_lines(&mut file, &lines[unwritten..i])?;
                unwritten = i;
                file.sync_all()?;
                // The full file keeps a timestamped name; a fresh one takes its place.
                let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
                let mut rotated = path.as_os_str().to_owned();
                rotated.push(format!(".{stamp}"));
                std::fs::rename(path, &rotated)?;
                file = open(path)?;
                len = 0;
            }
            len += size;
        }
        write_lines(&mut file, &lines[unwritten..])?;
        file.sync_data()?;
        Ok(file)
    })();
    match result {
        Ok(file) => {
            *slot = Some(file);
            Ok(())
        }
        // Reopen next time: the handle may point at a moved file or a full disk.
        Err(e) => Err(e),
    }
}

/// Writes each line followed by a newline, in as few `writev` calls as the kernel takes (at
/// most 1024 slices each: a line and its newline are two).
fn write_lines(file: &mut File, lines: &[Bytes]) -> std::io::Result<()> {
    for group in lines.chunks(512) {
        let mut slices: Vec<IoSlice> = group
            .iter()
            .flat_map(|l| [IoSlice::new(l), IoSlice::new(b"\n")])
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = file.write_vectored(rest)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "the file took no bytes",
                ));
            }
            IoSlice::advance_slices(&mut rest, n);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> Vec<Bytes> {
        (0..n)
            .map(|i| Bytes::from(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 7))))
            .collect()
    }

    fn expected(lines: &[Bytes]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| [&l[..], b"\n"])
            .flatten()
            .copied()
            .collect()
    }

    /// More lines than one `writev` takes, in one batch: every one, in order, each on its
    /// own line.
    #[test]
    fn a_large_batch_is_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let (first, second) = (lines(1500), lines(3));
        let mut slot = None;
        write_synced(&mut slot, &path, None, &first).unwrap();
        write_synced(&mut slot, &path, None, &second).unwrap();
        let mut want = expected(&first);
        want.extend(expected(&second));
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    /// Rotation cuts between lines, never through one, and loses none.
    #[test]
    fn rotation_cuts_between_lines_and_keeps_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let all = lines(2000);
        let mut slot = None;
        write_synced(&mut slot, &path, Some(4096), &all).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(files.len() > 3, "rotated into {} files", files.len());
        // Rotated files are named by time; the live one (no suffix) holds the newest lines.
        files.sort_by_key(|p| (p == &path, p.clone()));
        let mut joined = Vec::new();
        for f in &files {
            let text = std::fs::read(f).unwrap();
            assert!(
                text.len() <= 4096,
                "{} is {} bytes",
                f.display(),
                text.len()
            );
            assert!(text.ends_with(b"\n"), "{} ends mid-line", f.display());
            joined.extend(text);
        }
        assert_eq!(joined, expected(&all));
    }
}
