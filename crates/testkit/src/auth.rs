//! A nats-server that runs oprelay's own authorization (`oprelay_bus::access`), optionally
//! with TLS: what a production bus looks like, for tests that must prove each service works
//! with only its own user.

use std::path::PathBuf;

use oprelay_bus::access::{authorization_config, Role};

use crate::{NatsOptions, NatsServer, TestPki};

/// A password file per role and, with TLS, a throw-away CA and server certificate.
pub struct BusAccess {
    pub pki: Option<TestPki>,
    dir: tempfile::TempDir,
}

impl BusAccess {
    pub fn generate(tls: bool) -> BusAccess {
        let dir = tempfile::tempdir().expect("temp dir for NATS secrets");
        for role in Role::ALL {
            // Unguessable enough for a test, and never the same twice in one run.
            let password = format!(
                "pw-{}-{}-{:x}",
                role.as_str(),
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default()
            );
            std::fs::write(dir.path().join(role.as_str()), password).expect("password file");
        }
        let pki = tls.then(|| TestPki::generate(dir.path()));
        BusAccess { pki, dir }
    }

    /// nats-server options: the authorization rendered for `sinks`, the passwords in its
    /// environment, TLS when generated, on `port` (0: any free one).
    pub fn server_options(&self, sinks: &[String], port: u16) -> NatsOptions {
        let mut extra_config = authorization_config(sinks);
        if let Some(pki) = &self.pki {
            extra_config.push_str(&format!(
                "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
                pki.server_cert.display().to_string(),
                pki.server_key.display().to_string(),
            ));
        }
        NatsOptions {
            extra_config,
            env: Role::ALL
                .into_iter()
                .map(|r| (r.password_env(), self.password(r)))
                .collect(),
            port,
            ..Default::default()
        }
    }

    /// `[nats] url` for a cluster: every node's URL, comma-separated.
    pub fn cluster_url(&self, cluster: &crate::NatsCluster) -> String {
        cluster.urls_with(|n| self.url(n.port()))
    }

    /// The client URL for `port`: `tls://localhost:PORT` with TLS (the certificate's name).
    pub fn url(&self, port: u16) -> String {
        match self.pki {
            Some(_) => format!("tls://localhost:{port}"),
            None => format!("nats://127.0.0.1:{port}"),
        }
    }

    pub fn password_file(&self, role: Role) -> PathBuf {
        self.dir.path().join(role.as_str())
    }

    pub fn password(&self, role: Role) -> String {
        std::fs::read_to_string(self.password_file(role)).expect("password file")
    }

    /// The environment that makes a service or `oprelay` connect as `role`, on top of a config
    /// whose `[nats]` keys are [`Self::config_keys`].
    pub fn env(&self, role: Role) -> Vec<(String, String)> {
        vec![
            ("OPRELAY_NATS__USER".into(), role.user()),
            (
                "OPRELAY_NATS__PASSWORD_FILE".into(),
                self.password_file(role).display().to_string(),
            ),
        ]
    }

    /// `[nats]` keys for a config file: the url, and the CA with TLS.
    pub fn config_keys(&self, port: u16) -> String {
        let mut out = format!("url = \"{}\"\n", self.url(port));
        if let Some(pki) = &self.pki {
            out.push_str(&format!("tls_ca = \"{}\"\n", pki.ca_cert.display()));
        }
        out
    }
}

/// A running server with oprelay's authorization, and the secrets to use it.
pub struct SecureBus {
    pub server: NatsServer,
    pub access: BusAccess,
}

impl SecureBus {
    pub fn start(sinks: &[String], tls: bool) -> SecureBus {
        let access = BusAccess::generate(tls);
        let server = NatsServer::start_with(access.server_options(sinks, 0));
        SecureBus { server, access }
    }

    pub fn url(&self) -> String {
        self.access.url(self.server.port())
    }

    pub fn password(&self, role: Role) -> String {
        self.access.password(role)
    }

    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.access.pki.as_ref().map(|p| p.ca_cert.clone())
    }
}
