//! The end-to-end harness: a real nats-server, opsim serving a simulated account, SIEM
//! receivers, and the four real service binaries as separate processes, each of which a test
//! can kill -9 and restart. Tests live in `tests/*.rs` of this package.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oprelay_bus::access::Role;
use oprelay_events::{Feed, LookupKind};
use oprelay_testkit::receivers::{es_receiver, hec_receiver, http_receiver, serve, Recv, Shared};
use oprelay_testkit::{binary, eventually, BusAccess, NatsCluster};

pub mod k8s;

/// The four services, in the order the pipeline runs them.
pub const SERVICES: [&str; 4] = [
    "oprelay-fetcher",
    "oprelay-normalizer",
    "oprelay-forwarder",
    "oprelay-healthwatch",
];

/// The HEC token the Splunk receiver accepts.
const HEC_TOKEN: &str = "e2e-hec-token";

/// The account every pipeline here fetches.
pub const ACCOUNT: &str = "acme";
pub const LABEL: &str = "ACME Corp";

pub struct Spec {
    /// Events per feed already in the account.
    pub backfill: u64,
    /// Live events per second per feed.
    pub rate: f64,
    /// Extra config TOML (a `[telemetry]` table is already there; use env for it).
    pub extra_config: String,
    /// Environment for every service (e.g. OTLP settings).
    pub env: Vec<(String, String)>,
    /// Start the services (false: only NATS, opsim, receivers and lookups).
    pub services: bool,
    /// The simulator's 600/min, 30 000/h limits (off for benchmarks).
    pub rate_limits: bool,
    /// Replaces the Elasticsearch and HTTP receiver sinks (`[[sinks]]` TOML).
    pub sinks: Option<String>,
    /// Accounts fetched from the simulator: `acme`, then `acme-2`, `acme-3`, …
    pub accounts: usize,
    /// NATS as production runs it: oprelay's authorization (each service its own user, the
    /// CLI the operator) and TLS. Off: an open bus on plain TCP.
    pub secure: bool,
    /// nats-server nodes: 1, or 3 for a JetStream cluster (with `nats.replicas = 3`).
    pub nats_nodes: usize,
    /// Adds a Splunk HEC sink (`splunk`, indexer acknowledgement on) to the default sinks.
    pub hec: bool,
    /// More keys for the default `elastic` sink (TOML lines, e.g. `manage_template = true`).
    pub elastic_extra: String,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            backfill: 200,
            rate: 0.0,
            extra_config: String::new(),
            env: Vec::new(),
            services: true,
            rate_limits: true,
            sinks: None,
            accounts: 1,
            secure: true,
            nats_nodes: 1,
            hec: false,
            elastic_extra: String::new(),
        }
    }
}

struct Service {
    child: Child,
    admin: SocketAddr,
}

pub struct Pipeline {
    pub nats: NatsCluster,
    /// The users' passwords and the CA, when the bus is secured.
    pub access: Option<BusAccess>,
    pub sim: opsim::Sim,
    pub sim_url: String,
    /// Elasticsearch `_bulk` receiver (idempotent by `_id`).
    pub es: Shared,
    /// Generic HTTP NDJSON receiver (at least once).
    pub http: Shared,
    /// Splunk HEC receiver with indexer acknowledgement (at least once), when `Spec::hec`.
    pub hec: Shared,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    env: Vec<(String, String)>,
    /// By name, or `{name}-{n}` for the n-th replica of one.
    services: BTreeMap<String, Service>,
    _sim_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub use oprelay_testkit::free_port;

impl Pipeline {
    pub async fn start(spec: Spec) -> Pipeline {
        let dir = tempfile::tempdir().expect("temp dir");
        let sim = opsim::Sim::new(opsim::SimConfig {
            backfill: spec.backfill,
            rate: spec.rate,
            rate_limits: if spec.rate_limits {
                Some(opsim::RateLimits::default())
            } else {
                None
            },
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("opsim listener");
        let sim_url = format!("http://{}", listener.local_addr().expect("addr"));
        let sim_task = sim.serve(listener);
        let token = sim.mint_token(&opsim::TokenSpec::default());
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, &token).expect("token file");

        let es: Shared = Arc::new(Mutex::new(Recv::default()));
        let http: Shared = Arc::new(Mutex::new(Recv::default()));
        let es_addr = serve(es_receiver(es.clone())).await;
        let http_addr = serve(http_receiver(http.clone(), None)).await;
        let hec: Shared = Arc::new(Mutex::new(Recv::default()));
        let hec_addr = serve(hec_receiver(hec.clone(), HEC_TOKEN, true)).await;
        let hec_token = dir.path().join("hec-token");
        std::fs::write(&hec_token, HEC_TOKEN).expect("HEC token file");

        let sinks = spec.sinks.unwrap_or_else(|| {
            format!(
                r#"
[[sinks]]
name = "elastic"
type = "elasticsearch"
endpoint = "http://{es_addr}"
batch = {{ max_events = 2000, timeout = "200ms" }}
{elastic_extra}

[[sinks]]
name = "panther"
type = "http"
endpoint = "http://{http_addr}/ingest"
batch = {{ max_events = 2000, timeout = "200ms" }}
{hec_sink}"#,
                elastic_extra = spec.elastic_extra,
                hec_sink = if spec.hec {
                    format!(
                        "\n[[sinks]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nendpoint = \"http://{hec_addr}\"\ntoken_file = \"{}\"\nack = true\nbatch = {{ max_events = 2000, timeout = \"200ms\" }}\n",
                        hec_token.display()
                    )
                } else {
                    String::new()
                }
            )
        });
        // More accounts (benchmarks): the API's rate limit is per token, so throughput beyond
        // 600 pages a minute takes several accounts, as it does in production.
        let mut more_accounts = String::new();
        for i in 2..=spec.accounts.max(1) {
            more_accounts.push_str(&format!(
                "\n[[accounts]]\nname = \"{ACCOUNT}-{i}\"\nbase_url = \"{sim_url}\"\ntoken_file = \"{}\"\nstart_time = \"2000-01-01T00:00:00Z\"\npoll_interval = \"1s\"\n",
                token_file.display()
            ));
        }
        let access = spec.secure.then(|| BusAccess::generate(true));
        let nodes = spec.nats_nodes.max(1);
        let (nats, mut nats_keys) = match &access {
            Some(access) => {
                let mut options = access.server_options(&sink_names(&sinks), 0);
                if let (Some(pki), true) = (&access.pki, nodes > 1) {
                    // Routes between the nodes are TLS too, as in the prod overlay.
                    options.cluster_config = route_tls(pki);
                }
                let nats = NatsCluster::start(nodes, options);
                let mut keys = format!("url = \"{}\"\n", access.cluster_url(&nats));
                if let Some(pki) = &access.pki {
                    keys.push_str(&format!("tls_ca = \"{}\"\n", pki.ca_cert.display()));
                }
                (nats, keys)
            }
            None => {
                let nats = NatsCluster::start(nodes, Default::default());
                let keys = format!("url = \"{}\"\n", nats.url());
                (nats, keys)
            }
        };
        nats_keys.push_str(&format!("replicas = {}\n", if nodes > 1 { 3 } else { 1 }));
        let config = dir.path().join("oprelay.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[nats]
{nats_keys}
ack_wait = "5s"

[[accounts]]
name = "{ACCOUNT}"
label = "{LABEL}"
base_url = "{sim_url}"
token_file = "{token}"
start_time = "2000-01-01T00:00:00Z"
poll_interval = "1s"
{more_accounts}
{sinks}
{extra_config}
"#,
                token = token_file.display(),
                extra_config = spec.extra_config,
            ),
        )
        .expect("write config");

        let mut p = Pipeline {
            nats,
            access,
            sim,
            sim_url,
            es,
            http,
            hec,
            dir,
            config,
            env: spec.env,
            services: BTreeMap::new(),
            _sim_task: sim_task,
        };
        // Provisioning is the operator's step, before any service starts.
        let out = p.oprelay(&["nats", "provision"]);
        assert!(out.status.success(), "nats provision: {}", text(&out));
        p.import_lookups();
        if spec.services {
            for s in SERVICES {
                p.start_service(s).await;
            }
        }
        p
    }

    /// The simulated account's items, vaults and users, as `op … list --format json` files.
    pub fn lookup_files(&self) -> Vec<PathBuf> {
        let d = self.sim.directory();
        let mut out = Vec::new();
        for (name, v) in [
            ("items.json", d.op_item_list()),
            ("vaults.json", d.op_vault_list()),
            ("users.json", d.op_user_list()),
        ] {
            let p = self.dir.path().join(name);
            std::fs::write(&p, serde_json::to_vec(&v).expect("json")).expect("write");
            out.push(p);
        }
        out
    }

    fn import_lookups(&self) {
        let mut args = vec!["lookups".to_owned(), "import".to_owned()];
        args.extend(self.lookup_files().iter().map(|p| p.display().to_string()));
        let out = self.oprelay(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "lookups import: {}", text(&out));
    }

    /// Runs the `oprelay` CLI with this pipeline's config, as the operator.
    pub fn oprelay(&self, args: &[&str]) -> Output {
        Command::new(binary("oprelay"))
            .args(args)
            .env("OPRELAY_CONFIG", &self.config)
            // The services' overrides too: what the CLI provisions is what they check.
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(self.nats_env(Role::Operator))
            .output()
            .expect("oprelay runs")
    }

    /// The environment that makes a process connect as `role` (nothing on an open bus).
    pub fn nats_env(&self, role: Role) -> Vec<(String, String)> {
        self.access
            .as_ref()
            .map(|a| a.env(role))
            .unwrap_or_default()
    }

    /// What a service has logged so far (JSON lines).
    pub fn log(&self, service: &str) -> String {
        std::fs::read_to_string(self.log_path(service)).unwrap_or_default()
    }

    fn log_path(&self, service: &str) -> PathBuf {
        self.dir.path().join(format!("{service}.log"))
    }

    /// Starts a service and waits until its `/readyz` says it is ready.
    pub async fn start_service(&mut self, name: &'static str) {
        self.spawn(name, name.to_owned()).await;
    }

    /// Starts the `n`-th replica of a service as another pod would run it (the same config,
    /// its own admin port, log and pod name) and waits until it is ready; `{name}-{n}` names it
    /// in [`Pipeline::pid`], [`Pipeline::admin`] and the other calls that take a name.
    pub async fn start_replica(&mut self, name: &'static str, n: usize) -> String {
        let key = format!("{name}-{n}");
        self.spawn(name, key.clone()).await;
        key
    }

    async fn spawn(&mut self, name: &'static str, key: String) {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&key))
            .expect("log file");
        let mut command = Command::new(binary(name));
        if key != name {
            // A pod name of its own: replicas are told apart by it (leases, heartbeats).
            command.env("HOSTNAME", &key);
        }
        let child = command
            .env("OPRELAY_CONFIG", &self.config)
            .env("OPRELAY_TELEMETRY__LISTEN", admin.to_string())
            .env("OPRELAY_TELEMETRY__LOG_FORMAT", "json")
            .envs(self.nats_env(role_of(name)))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        self.services.insert(key.clone(), Service { child, admin });
        self.wait_ready(&key).await;
    }

    async fn wait_ready(&mut self, name: &str) {
        let admin = self.services[name].admin;
        let client = reqwest::Client::new();
        let what = format!("{name} to answer 200 on /readyz at {admin}");
        eventually(Duration::from_secs(60), &what, || {
            let client = client.clone();
            async move {
                let r = client
                    .get(format!("http://{admin}/readyz"))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill9(&mut self, name: &str) {
        if let Some(mut s) = self.services.remove(name) {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }

    /// SIGTERM, and how the process ended and how long it took.
    pub async fn terminate(&mut self, name: &str) -> (std::process::ExitStatus, Duration) {
        let mut s = self
            .services
            .remove(name)
            .unwrap_or_else(|| panic!("{name} is not running"));
        let started = std::time::Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status()
            .map(|st| st.success())
            .unwrap_or(false);
        assert!(ok, "SIGTERM to {name}");
        loop {
            if let Some(status) = s.child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = s.child.kill();
                panic!("{name} did not exit within 30 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A service's `/metrics` text; `None` while it does not answer.
    pub async fn scrape(&self, name: &str) -> Option<String> {
        let admin = self.admin(name).expect("service running");
        reqwest::get(format!("http://{admin}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// One sample's value from a service's `/metrics` (summed over its label sets).
    pub async fn metric(&self, name: &str, metric: &str) -> f64 {
        let text = self.scrape(name).await.expect("metrics answer");
        text.lines()
            .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Whether the service's process is still alive (it has not exited on its own).
    pub fn is_running(&mut self, name: &str) -> bool {
        self.services
            .get_mut(name)
            .is_some_and(|s| matches!(s.child.try_wait(), Ok(None)))
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.services.get(name).map(|s| s.child.id())
    }

    pub fn admin(&self, name: &str) -> Option<SocketAddr> {
        self.services.get(name).map(|s| s.admin)
    }

    /// Every event of `feed` the account holds now, by index (opsim is deterministic).
    pub fn events(&self, feed: Feed) -> Vec<serde_json::Value> {
        (0..self.sim.available(feed))
            .map(|i| self.sim.event(feed, i))
            .collect()
    }

    /// The p_row_ids of every event the account holds now.
    pub fn expected_row_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for feed in Feed::ALL {
            for e in self.events(feed) {
                let uuid = e["uuid"].as_str().unwrap_or_default().to_owned();
                ids.push(oprelay_normalizer::normalize::row_id(
                    feed.log_type(),
                    &uuid,
                ));
            }
        }
        ids
    }

    /// The name an imported lookup gives a UUID, to check enrichment.
    pub fn title_of(&self, kind: LookupKind, uuid: &str) -> Option<String> {
        let d = self.sim.directory();
        match kind {
            LookupKind::Item => d
                .items
                .iter()
                .find(|i| i.uuid == uuid)
                .map(|i| i.title.clone()),
            LookupKind::Vault => d
                .vaults
                .iter()
                .find(|v| v.uuid == uuid)
                .map(|v| v.name.clone()),
            LookupKind::User => d
                .users
                .iter()
                .find(|u| u.uuid == uuid)
                .map(|u| u.name.clone()),
            LookupKind::Group => None,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// One message read back from a stream.
pub struct StoredMessage {
    pub subject: String,
    pub headers: oprelay_bus::async_nats::HeaderMap,
    pub payload: Vec<u8>,
}

impl Pipeline {
    /// A connection as the operator.
    pub async fn bus(&self) -> oprelay_bus::Bus {
        let settings = match &self.access {
            Some(a) => oprelay_bus::NatsSettings {
                url: a.cluster_url(&self.nats),
                user: Some(Role::Operator.user()),
                password: Some(oprelay_events::Secret::new(a.password(Role::Operator))),
                tls_ca: a.pki.as_ref().map(|p| p.ca_cert.clone()),
                ..Default::default()
            },
            None => oprelay_bus::NatsSettings {
                url: self.nats.url(),
                ..Default::default()
            },
        };
        oprelay_bus::Bus::connect(&settings)
            .await
            .expect("connect to nats")
    }

    /// Every message a stream holds, in order.
    pub async fn stream_messages(&self, stream: &str) -> Vec<StoredMessage> {
        let bus = self.bus().await;
        let Ok(mut s) = bus.jetstream().get_stream(stream).await else {
            return Vec::new();
        };
        let Ok(info) = s.info().await else {
            return Vec::new();
        };
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut out = Vec::new();
        for seq in first.max(1)..=last {
            if let Ok(m) = s.get_raw_message(seq).await {
                out.push(StoredMessage {
                    subject: m.subject.to_string(),
                    headers: m.headers.clone(),
                    payload: m.payload.to_vec(),
                });
            }
        }
        out
    }

    /// Records in OP_EVENTS so far (from the `Oprelay-Count` headers).
    pub async fn normalized_count(&self) -> u64 {
        self.stream_messages("OP_EVENTS")
            .await
            .iter()
            .filter_map(|m| oprelay_bus::header_value(Some(&m.headers), "Oprelay-Count"))
            .filter_map(|c| c.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for (_, mut s) in std::mem::take(&mut self.services) {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

/// nats-server's TLS on the cluster routes: both ends present the test certificate, which
/// names localhost and carries no usage restriction, and check the other's against the CA.
fn route_tls(pki: &oprelay_testkit::TestPki) -> String {
    format!(
        "  tls {{\n    cert_file: {:?}\n    key_file: {:?}\n    ca_file: {:?}\n    verify: true\n  }}",
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
        pki.ca_cert.display().to_string(),
    )
}

/// The NATS user a service binary runs as.
fn role_of(service: &str) -> Role {
    match service {
        "oprelay-fetcher" => Role::Fetcher,
        "oprelay-normalizer" => Role::Normalizer,
        "oprelay-forwarder" => Role::Forwarder,
        "oprelay-healthwatch" => Role::Healthwatch,
        _ => Role::Operator,
    }
}

/// The `name`s of the `[[sinks]]` in a TOML snippet (the authorization names their consumers).
fn sink_names(sinks_toml: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_sink = false;
    for line in sinks_toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_sink = line == "[[sinks]]";
        } else if in_sink {
            if let Some(value) = line.strip_prefix("name") {
                let value = value.trim_start().trim_start_matches('=').trim();
                names.push(value.trim_matches('"').to_owned());
            }
        }
    }
    names
}

/// A process's stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub use oprelay_testkit::peak_rss_kib;
