//! Where a secret comes from, and reading it afresh each time it is needed.

use std::path::PathBuf;

use oprelay_events::Secret;

use super::ConfigError;

/// Where a secret comes from: a file (a mounted Kubernetes Secret) or an environment variable.
/// Never the config file itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("{0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// Reads the secret now, trimmed of surrounding whitespace. Called again after a rejection,
    /// so a rotated Secret is picked up without a restart.
    pub fn read(&self) -> Result<Secret, SecretError> {
        let (value, what) = match self {
            SecretSource::File(path) => (
                std::fs::read_to_string(path).map_err(|e| SecretError::File {
                    path: path.display().to_string(),
                    reason: e.kind().to_string(),
                })?,
                path.display().to_string(),
            ),
            SecretSource::Env(name) => (
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?,
                format!("environment variable {name}"),
            ),
        };
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(SecretError::Empty(what));
        }
        Ok(Secret::new(trimmed))
    }

    /// A secret named by a `_file` key or an `_env` key; the file when both are given (which
    /// validation refuses).
    pub fn either(file: &Option<PathBuf>, env: &Option<String>) -> Option<SecretSource> {
        match (file, env) {
            (Some(f), _) => Some(SecretSource::File(f.clone())),
            (None, Some(e)) => Some(SecretSource::Env(e.clone())),
            (None, None) => None,
        }
    }

    /// The secret named by `{key}_file` or `{key}_env`, refusing both at once.
    pub(super) fn from_keys(
        key: &str,
        file: &Option<PathBuf>,
        env: &Option<String>,
    ) -> Result<Option<SecretSource>, ConfigError> {
        match (file, env) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                format!("{key}_file / {key}_env"),
                "set one of them, not both",
            )),
            (Some(f), None) => Ok(Some(SecretSource::File(f.clone()))),
            (None, Some(e)) => Ok(Some(SecretSource::Env(e.clone()))),
            (None, None) => Ok(None),
        }
    }
}
