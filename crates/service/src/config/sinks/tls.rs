//! `sinks[].tls`: the TLS material of a sink that speaks TLS (the HTTP sinks, syslog over TLS).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Certificate verification; turning it off must be written out and is logged.
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify: true,
        }
    }
}

impl TlsConfig {
    /// The files it names, by key (relative to the sink).
    pub(super) fn files(&self) -> Vec<(String, &std::path::Path)> {
        [
            ("tls.ca_file", &self.ca_file),
            ("tls.cert_file", &self.cert_file),
            ("tls.key_file", &self.key_file),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.as_deref().map(|p| (k.to_owned(), p)))
        .collect()
    }
}
