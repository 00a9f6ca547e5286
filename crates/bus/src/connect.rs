//! Connecting to NATS: plain, user/password, creds file, TLS with a private CA and client certs.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions};
use oprelay_events::Secret;

use crate::backoff::Backoff;
use crate::error::BusError;

/// How to reach NATS. Services build it from the `[nats]` config section. Its `Debug` shows
/// the URL without credentials.
#[derive(Clone, Default)]
pub struct NatsSettings {
    /// One URL, or several separated by commas (the servers of a cluster).
    pub url: String,
    /// User and password authentication: the user.
    pub user: Option<String>,
    /// Its password, read from a file or variable by the caller.
    pub password: Option<Secret>,
    /// A `.creds` file (JWT and NKey) instead of user and password.
    pub creds_file: Option<PathBuf>,
    /// A CA bundle to trust instead of the system roots; turns TLS on.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate, for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    /// Its key.
    pub tls_key: Option<PathBuf>,
    /// Shown in the server's connection list (`nats server report connections`).
    pub client_name: Option<String>,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &redact_url(&self.url))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "(redacted)"))
            .field("creds_file", &self.creds_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("client_name", &self.client_name)
            .finish()
    }
}

/// Credentials written into a NATS URL (`nats://user:pass@host`, `nats://token@host`).
#[derive(Debug, PartialEq, Eq)]
enum UrlCredentials {
    UserPassword(String, String),
    Token(String),
}

/// Splits credentials out of a (comma-separated) NATS URL: the URL without them, for the
/// client and for logs, and the credentials of the first server that has any. The client this
/// project uses does not read credentials from the URL itself, and a URL with a password must
/// never be printed.
fn split_credentials(urls: &str) -> (String, Option<UrlCredentials>) {
    let mut found = None;
    let mut clean = Vec::new();
    for part in urls.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let with_scheme = if part.contains("://") {
            part.to_owned()
        } else {
            format!("nats://{part}")
        };
        let Ok(mut parsed) = url::Url::parse(&with_scheme) else {
            // Not a URL we can read: keep it out of logs entirely if it might hold a secret.
            clean.push(if part.contains('@') {
                "(unreadable URL)".to_owned()
            } else {
                part.to_owned()
            });
            continue;
        };
        let user = parsed.username().to_owned();
        let password = parsed.password().map(str::to_owned);
        if found.is_none() && !user.is_empty() {
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            found = Some(match password {
                Some(p) => UrlCredentials::UserPassword(decode(&user), decode(&p)),
                None => UrlCredentials::Token(decode(&user)),
            });
        }
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        clean.push(parsed.to_string().trim_end_matches('/').to_owned());
    }
    (clean.join(","), found)
}

/// The URL as it may be shown: without any user, password or token in it.
pub fn redact_url(urls: &str) -> String {
    split_credentials(urls).0
}

/// After the first connection, reconnect forever: from 100 ms, doubling up to 5 s, ± 25 % so a
/// restarted NATS is not hit by every client at the same instant.
fn reconnect_delay(attempts: usize) -> Duration {
    const RECONNECT: Backoff =
        Backoff::spread(Duration::from_millis(100), Duration::from_secs(5), 25);
    RECONNECT.wait(
        u32::try_from(attempts)
            .unwrap_or(u32::MAX)
            .saturating_add(1),
    )
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
    let (url, in_url) = split_credentials(&settings.url);
    opts = with_credentials(opts, settings, in_url).await?;
    opts = with_tls(opts, settings)?;
    // The client takes a list as a list; one string with commas would be read as one URL.
    let servers: Vec<&str> = url.split(',').collect();
    opts.connect(servers).await.map_err(|e| {
        let retryable = matches!(
            e.kind(),
            ConnectErrorKind::Io | ConnectErrorKind::TimedOut | ConnectErrorKind::Dns
        );
        BusError::Connect {
            url: url.clone(),
            source: Box::new(e),
            retryable,
        }
    })
}

/// The user, password, token or creds file to authenticate with: from the settings, or from
/// the URL when the settings name none.
async fn with_credentials(
    mut opts: ConnectOptions,
    settings: &NatsSettings,
    in_url: Option<UrlCredentials>,
) -> Result<ConnectOptions, BusError> {
    // Replies to a named user come under its own prefix, the only inbox its permissions let it
    // read (see `access`).
    let user = match (&settings.user, &in_url) {
        (Some(user), _) => Some(user.clone()),
        (None, Some(UrlCredentials::UserPassword(user, _))) => Some(user.clone()),
        _ => None,
    };
    if let Some(user) = user {
        opts = opts.custom_inbox_prefix(crate::access::inbox_prefix(&user));
    }
    match (&settings.user, &settings.password) {
        (Some(user), Some(password)) => {
            opts = opts.user_and_password(user.clone(), password.expose().to_owned());
        }
        (None, None) => match in_url {
            Some(UrlCredentials::UserPassword(user, password)) => {
                opts = opts.user_and_password(user, password);
            }
            Some(UrlCredentials::Token(token)) => opts = opts.token(token),
            None => {}
        },
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
    Ok(opts)
}

/// The CA to trust and the client certificate to present; either turns TLS on.
fn with_tls(mut opts: ConnectOptions, settings: &NatsSettings) -> Result<ConnectOptions, BusError> {
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
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_url_and_never_stay_in_it() {
        let (url, creds) = split_credentials("nats://svc:p%40ss@nats-0:4222,nats://nats-1:4222");
        assert_eq!(url, "nats://nats-0:4222,nats://nats-1:4222");
        assert_eq!(
            creds,
            Some(UrlCredentials::UserPassword("svc".into(), "p@ss".into()))
        );
        let (url, creds) = split_credentials("tls://s3cr3t-token@nats:4222");
        assert_eq!(url, "tls://nats:4222");
        assert_eq!(creds, Some(UrlCredentials::Token("s3cr3t-token".into())));
        assert_eq!(redact_url("127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("nats://nats:4222"), "nats://nats:4222");
    }

    #[test]
    fn reconnect_delay_grows_and_is_capped() {
        assert!(reconnect_delay(0) < Duration::from_millis(200));
        for attempts in 0..100 {
            assert!(reconnect_delay(attempts) <= Duration::from_millis(6_250));
        }
        assert!(reconnect_delay(10) >= Duration::from_millis(3_750));
    }
}
