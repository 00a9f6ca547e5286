//! NDJSON appended to a file, rotated by size, synced to disk before the batch counts as
//! delivered.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

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
        // The batch as the bytes the file gets, and where each line ends (for rotation): one
        // buffer, no allocation per record.
        let mut data = Vec::with_capacity(records.iter().map(|r| r.body.len() + 1).sum());
        let mut ends = Vec::with_capacity(records.len());
        for r in records {
            data.extend_from_slice(&r.body);
            data.push(b'\n');
            ends.push(data.len());
        }
        let mut guard = self.file.clone().lock_owned().await;
        let path = self.path.clone();
        let max = self.max_bytes;
        tokio::task::spawn_blocking(move || write_synced(&mut guard, &path, max, &data, &ends))
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

/// Appends the lines (`data`, each ending at an offset of `ends`), rotating whenever the next
/// line would take the file past `max`, and syncs before returning: a batch is delivered only
/// once it is on disk.
fn write_synced(
    slot: &mut Option<File>,
    path: &PathBuf,
    max: Option<u64>,
    data: &[u8],
    ends: &[usize],
) -> std::io::Result<()> {
    let result = (|| {
        let mut file = match slot.take() {
            Some(f) => f,
            None => open(path)?,
        };
        let mut len = file.metadata()?.len();
        let (mut start, mut unwritten) = (0, 0);
        for &end in ends {
            let line = (end - start) as u64;
            if max.is_some_and(|m| len > 0 && len + line > m) {
                file.write_all(&data[unwritten..start])?;
                unwritten = start;
                file.sync_all()?;
                // The full file keeps a timestamped name; a fresh one takes its place.
                let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
                let mut rotated = path.as_os_str().to_owned();
                rotated.push(format!(".{stamp}"));
                std::fs::rename(path, &rotated)?;
                file = open(path)?;
                len = 0;
            }
            len += line;
            start = end;
        }
        file.write_all(&data[unwritten..])?;
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
