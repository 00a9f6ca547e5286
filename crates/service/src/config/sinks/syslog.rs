//! `type = "syslog"`: RFC 5424 messages over TCP, TLS or UDP.

use std::path::Path;

use serde::Deserialize;

use super::{OutputFormat, SinkKeys};
use crate::config::ConfigError;

/// The keys of a syslog sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` of the syslog server.
    pub address: String,
    #[serde(default)]
    pub transport: Transport,
}

/// How a syslog sink reaches its server (RFC 6587 framing on TCP and TLS, RFC 5426 on UDP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Transport {
    #[default]
    Tcp,
    Tls,
    Udp,
}

impl TryFrom<String> for Transport {
    type Error = String;

    fn try_from(s: String) -> Result<Transport, String> {
        match s.as_str() {
            "tcp" => Ok(Transport::Tcp),
            "tls" => Ok(Transport::Tls),
            "udp" => Ok(Transport::Udp),
            other => Err(format!("`{other}` is not tcp, tls or udp")),
        }
    }
}

impl SinkKeys for SyslogConfig {
    fn check(&self, _format: OutputFormat) -> Result<(), ConfigError> {
        match self.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => Err(ConfigError::new(
                "address",
                format!("`{}` is not host:port", self.address),
            )),
        }
    }

    fn files(&self) -> Vec<(String, &Path)> {
        Vec::new()
    }
}
