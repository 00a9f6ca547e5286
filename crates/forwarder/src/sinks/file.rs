//! NDJSON appended to a file, rotated by size, synced to disk before the batch counts as
//! delivered.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Mutex;

use oprelay_service::config::SinkConfig;

use super::{Outcome, SinkError};
use crate::format::Record;

pub struct FileSink {
    path: PathBuf,
    max_bytes: Option<u64>,
    file: Arc<Mutex<Option<File>>>,
}

impl FileSink {
    pub fn new(config: &SinkConfig) -> Result<FileSink, String> {
        let path = config.path.clone().ok_or("a file sink needs `path`")?;
        Ok(FileSink {
            path,
            max_bytes: config.max_bytes.map(|b| b.0),
            file: Arc::new(Mutex::new(None)),
        })
    }

    pub async fn send(&self, records: &[&Record]) -> Result<Outcome, SinkError> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.body.len() + 1).sum());
        for r in records {
            buf.extend_from_slice(&r.body);
            buf.push(b'\n');
        }
        let mut guard = self.file.clone().lock_owned().await;
        let path = self.path.clone();
        let max = self.max_bytes;
        tokio::task::spawn_blocking(move || write_synced(&mut guard, &path, max, &buf))
            .await
            .map_err(|e| SinkError::transient(format!("file writer task failed: {e}")))?
            .map_err(|e| {
                SinkError::transient(format!("cannot write {}: {e}", self.path.display()))
            })?;
        Ok(Outcome::Delivered)
    }
}

fn write_synced(
    slot: &mut Option<File>,
    path: &PathBuf,
    max: Option<u64>,
    buf: &[u8],
) -> std::io::Result<()> {
    if slot.is_none() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        *slot = Some(OpenOptions::new().create(true).append(true).open(path)?);
    }
    let Some(file) = slot.as_mut() else {
        return Ok(());
    };
    if let Some(max) = max {
        let len = file.metadata()?.len();
        if len > 0 && len + buf.len() as u64 > max {
            // Rotate: the full file keeps a timestamped name, a fresh one takes its place.
            file.sync_all()?;
            let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
            let mut rotated = path.as_os_str().to_owned();
            rotated.push(format!(".{stamp}"));
            std::fs::rename(path, &rotated)?;
            *slot = Some(OpenOptions::new().create(true).append(true).open(path)?);
        }
    }
    let Some(file) = slot.as_mut() else {
        return Ok(());
    };
    let result = file.write_all(buf).and_then(|_| file.sync_data());
    if result.is_err() {
        // Reopen next time: the handle may point at a file that was moved or a full disk.
        *slot = None;
    }
    result
}
