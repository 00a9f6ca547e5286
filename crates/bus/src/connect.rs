//! Connecting to NATS: plain, user/password, creds file, TLS with a private CA and client certs.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions};
use oprelay_events::Secret;

use crate::error::BusError;

/// How to reach NATS. Services build it from the `[nats]` config section.
#[derive(Clone, Debug, Default)]
pub struct NatsSettings {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub creds_file: Option<PathBuf>,
    /// A CA bundle to trust instead of the system roots; turns TLS on.
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Shown in the server's connection list (`nats server report connections`).
    pub client_name: Option<String>,
}

/// After the first connection, reconnect forever: exponential from 100 ms, capped at 5 s, with
/// jitter so a restarted NATS is not hit by every client at the same instant.
fn reconnect_delay(attempts: usize) -> Duration {
    let exp = 100u64.saturating_mul(1u64 << attempts.min(6));
    let capped = exp.min(5_000);
    let jitter = (capped / 4).max(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(capped - jitter + nanos % (2 * jitter))
}

/// Selects rustls's crypto provider for the whole process, once. Workspace builds compile in
/// both ring and aws-lc-rs, and rustls then refuses to guess (it panics on first TLS use).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One connection attempt. Errors say whether retrying can help: a refused connection can,
/// a rejected password cannot.
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, BusError> {
    install_crypto_provider();
    let mut opts = ConnectOptions::new()
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("NATS disconnected; reconnecting")
                }
                other => tracing::warn!(event = %other, "NATS connection event"),
            }
        });
    if let Some(name) = &settings.client_name {
        opts = opts.name(name);
    }
    match (&settings.user, &settings.password) {
        (Some(user), Some(password)) => {
            opts = opts.user_and_password(user.clone(), password.expose().to_owned());
        }
        (None, None) => {}
        _ => {
            return Err(BusError::Settings(
                "nats.user and the password must be set together".into(),
            ))
        }
    }
    if let Some(creds) = &settings.creds_file {
        opts = opts.credentials_file(creds).await.map_err(|e| {
            BusError::Settings(format!(
                "cannot read nats.creds_file {}: {e}",
                creds.display()
            ))
        })?;
    }
    if let Some(ca) = &settings.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => {
            opts = opts
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        (None, None) => {}
        _ => {
            return Err(BusError::Settings(
                "nats.tls_cert and nats.tls_key must be set together".into(),
            ))
        }
    }
    opts.connect(&settings.url).await.map_err(|e| {
        let retryable = matches!(
            e.kind(),
            ConnectErrorKind::Io | ConnectErrorKind::TimedOut | ConnectErrorKind::Dns
        );
        BusError::Connect {
            url: settings.url.clone(),
            source: Box::new(e),
            retryable,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_grows_and_is_capped() {
        assert!(reconnect_delay(0) < Duration::from_millis(200));
        for attempts in 0..100 {
            assert!(reconnect_delay(attempts) <= Duration::from_millis(6_250));
        }
        assert!(reconnect_delay(10) >= Duration::from_millis(3_750));
    }
}
