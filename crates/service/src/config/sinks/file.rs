//! `type = "file"`: NDJSON appended to a local file (an archive, or a shipper's input).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{OutputFormat, SinkKeys};
use crate::config::ConfigError;
use crate::units::ByteSize;

/// The keys of a file sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file records are appended to, one per line, fsynced per batch.
    pub path: PathBuf,
    /// Rotate at this size (the full file gets a timestamp suffix); unset: never.
    pub max_bytes: Option<ByteSize>,
}

impl SinkKeys for FileConfig {
    fn check(&self, _format: OutputFormat) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::new("path", "is empty"));
        }
        Ok(())
    }

    fn files(&self) -> Vec<(String, &Path)> {
        // The file sink writes its file; it need not exist before the first batch.
        Vec::new()
    }
}
