//! Config loading and validation: good files load, bad ones fail naming the key and the problem.

use std::time::Duration;

use oprelay_events::Feed;
use oprelay_service::config::{self, ApiVersion, OutputFormat, SinkType};
use oprelay_service::{ConfigError, SecretSource};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acme.token"), "  eyJ.token.value \n").unwrap();
        std::fs::write(dir.path().join("hec.token"), "hec-token").unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn full(&self) -> String {
        format!(
            r#"
[nats]
url = "nats://nats:4222"
replicas = 3

[telemetry]
log_format = "pretty"
listen = "0.0.0.0:9999"

[[accounts]]
name = "acme"
label = "ACME 1Password"
base_url = "https://events.1password.com"
token_file = "{token}"
feeds = ["signin_attempts", "item_usages"]
start_time = "2026-01-01T00:00:00Z"
poll_interval = "30s"
page_size = 500
api_version = 1

[[sinks]]
name = "splunk"
type = "splunk_hec"
endpoint = "https://splunk.example:8088"
token_file = "{hec}"
format = "raw"
batch = {{ max_events = 100, max_bytes = "512KiB", timeout = "2s" }}

[[sinks]]
name = "archive"
type = "file"
path = "/var/lib/oprelay/archive.ndjson"
max_bytes = "100MiB"

[healthwatch]
dropoff_after = "12h"
dropoff_overrides = {{ "acme.item_usages" = "48h" }}
notify = [{{ type = "slack", url = "https://hooks.slack.example/T0" }}]
"#,
            token = self.path("acme.token"),
            hec = self.path("hec.token")
        )
    }

    fn err(&self, text: &str) -> ConfigError {
        config::from_toml(text).expect_err("this config must be refused")
    }
}

#[test]
fn a_full_config_loads() {
    let f = Fixture::new();
    let c = config::from_toml(&f.full()).expect("valid config");
    assert_eq!(c.nats.url, "nats://nats:4222");
    assert_eq!(c.topology().replicas, 3);
    let a = &c.accounts[0];
    assert_eq!(a.name.as_str(), "acme");
    assert_eq!(a.label(), "ACME 1Password");
    assert_eq!(
        a.feeds.as_deref(),
        Some(&[Feed::SignInAttempts, Feed::ItemUsages][..])
    );
    assert_eq!(a.poll_interval.0, Duration::from_secs(30));
    assert_eq!(a.api_version, ApiVersion::V1);
    assert!(a.start_time().is_some());
    let token = a.token().read().expect("token readable");
    assert_eq!(token.expose(), "eyJ.token.value", "trimmed");
    assert_eq!(format!("{token:?}"), "***");
    assert_eq!(c.sinks[0].kind, SinkType::SplunkHec);
    assert_eq!(c.sinks[0].format, OutputFormat::Raw);
    assert_eq!(c.sinks[0].batch.max_bytes.0, 512 * 1024);
    assert_eq!(c.sinks[1].batch.max_events, 500, "batch defaults");
    assert_eq!(
        c.healthwatch.dropoff_after.0,
        Duration::from_secs(12 * 3600)
    );
}

#[test]
fn defaults_need_no_file() {
    let c = config::from_toml("").expect("empty config is valid");
    assert_eq!(c.nats.url, "nats://127.0.0.1:4222");
    assert!(c.accounts.is_empty());
    assert_eq!(c.healthwatch.dropoff_after.0, Duration::from_secs(86_400));
    assert!(c.nats.duplicate_window.0 >= Duration::from_secs(600));
}

#[test]
fn bad_configs_name_the_key_and_the_problem() {
    let f = Fixture::new();
    let token = f.path("acme.token");
    let account =
        |extra: &str| format!("[[accounts]]\nname = \"acme\"\ntoken_file = \"{token}\"\n{extra}");
    let cases: Vec<(String, &str, &str)> = vec![
        ("[nats]\nurll = \"x\"".into(), "nats", "urll"),
        ("[[accounts]]\nname = \"ACME Corp\"\ntoken_file = \"/x\"".into(), "accounts.0.name", "NATS subjects"),
        (account("feeds = [\"logins\"]"), "accounts.0.feeds", "unknown feed `logins`"),
        (account("poll_interval = \"2h\""), "accounts[0].poll_interval", "out of range"),
        (account("poll_interval = \"soon\""), "accounts.0.poll_interval", "not a duration"),
        (account("page_size = 5000"), "accounts[0].page_size", "1 to 1000"),
        (account("start_time = \"yesterday\""), "accounts[0].start_time", "RFC 3339"),
        (account("base_url = \"events.1password.com\""), "accounts[0].base_url", "not an http(s) URL"),
        (account("api_version = 3"), "accounts.0.api_version", "does not exist"),
        ("[[accounts]]\nname = \"acme\"\ntoken_file = \"/nonexistent/acme\"".into(), "accounts[0].token_file", "cannot be read"),
        ("[[accounts]]\nname = \"acme\"".into(), "accounts[0].token_file", "missing"),
        ("[[accounts]]\nname = \"acme\"\ntoken_env = \"OPRELAY_TEST_SURELY_UNSET_VAR\"".into(), "accounts[0].token_env", "is not set"),
        (format!("{}\n{}", account(""), account("")), "accounts[1].name", "used by two accounts"),
        ("[healthwatch]\ndropoff_after = \"5m\"".into(), "healthwatch.dropoff_after", "out of range"),
        ("[healthwatch]\ndropoff_after = \"31d\"".into(), "healthwatch.dropoff_after", "out of range"),
        ("[healthwatch]\ndropoff_overrides = { \"acme\" = \"1h\" }".into(), "healthwatch.dropoff_overrides", "account.feed"),
        ("[[sinks]]\nname = \"s\"\ntype = \"syslog\"\nendpoint = \"https://x\"\naddress = \"h:514\"".into(), "sinks[0].endpoint", "does not apply to a syslog sink"),
        ("[[sinks]]\nname = \"s\"\ntype = \"file\"".into(), "sinks[0].path", "missing"),
        ("[[sinks]]\nname = \"s\"\ntype = \"kafka\"".into(), "sinks.0.type", "unknown variant"),
        ("[[sinks]]\nname = \"s\"\ntype = \"syslog\"\naddress = \"h:514\"\ntransport = \"quic\"".into(), "sinks[0].transport", "not tcp, tls or udp"),
        ("[[sinks]]\nname = \"S!\"\ntype = \"file\"\npath = \"/x\"".into(), "sinks[0].name", "NATS consumer"),
        ("[[sinks]]\nname = \"s\"\ntype = \"splunk_hec\"\nendpoint = \"https://x\"".into(), "sinks[0].token_file", "HEC token"),
        ("[nats]\nuser = \"u\"".into(), "nats.user", "go together"),
        ("[nats]\nduplicate_window = \"1m\"".into(), "nats.duplicate_window", "at least 10m"),
    ];
    for (text, key, problem) in cases {
        let err = f.err(&text);
        assert!(
            err.key.starts_with(key),
            "key: want {key}, got {err}\n---\n{text}"
        );
        assert!(
            err.to_string().contains(problem),
            "problem: want {problem:?}, got {err}\n---\n{text}"
        );
    }
}

#[test]
fn secrets_are_reread_and_never_printed() {
    let f = Fixture::new();
    let src = SecretSource::File(f.dir.path().join("acme.token"));
    assert_eq!(src.read().unwrap().expose(), "eyJ.token.value");
    std::fs::write(f.dir.path().join("acme.token"), "rotated\n").unwrap();
    assert_eq!(
        src.read().unwrap().expose(),
        "rotated",
        "a rotated Secret is picked up"
    );
    std::fs::write(f.dir.path().join("acme.token"), "  \n").unwrap();
    let err = src.read().unwrap_err();
    assert!(err.to_string().contains("is empty"));
    let missing = SecretSource::File("/nonexistent/t".into())
        .read()
        .unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/t"));
}

/// A zero (or absurd) duration would make a loop spin or data vanish: every duration key has a
/// range, and the error names the key.
#[test]
fn every_duration_is_range_checked_and_the_error_names_the_key() {
    let sink = "[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"/tmp/oprelay-test.ndjson\"\n";
    let cases = [
        ("[nats]\nraw_max_age = \"0s\"", "nats.raw_max_age"),
        ("[nats]\nevents_max_age = \"0s\"", "nats.events_max_age"),
        ("[nats]\ndlq_max_age = \"0s\"", "nats.dlq_max_age"),
        (
            "[nats]\nduplicate_window = \"400d\"",
            "nats.duplicate_window",
        ),
        ("[healthwatch]\ninterval = \"0s\"", "healthwatch.interval"),
        (
            "[healthwatch]\ntoken_expiry_warning = \"0s\"",
            "healthwatch.token_expiry_warning",
        ),
        (
            "[healthwatch]\nfetch_silence = \"0s\"",
            "healthwatch.fetch_silence",
        ),
        (
            "[healthwatch]\nsink_stalled_after = \"0s\"",
            "healthwatch.sink_stalled_after",
        ),
    ];
    for (text, key) in cases {
        let err = config::from_toml(text).expect_err(key);
        assert_eq!(err.key, key, "{text}: {err}");
    }
    let err = config::from_toml(&format!("{sink}[sinks.batch]\ntimeout = \"0s\"\n"))
        .expect_err("batch timeout");
    assert_eq!(err.key, "sinks[0].batch.timeout", "{err}");
    config::from_toml(&format!("{sink}[sinks.batch]\ntimeout = \"250ms\"\n"))
        .expect("a sub-second batch timeout is fine");
}

/// A pod mounts only its own Secrets: loading the shared config must not open another
/// service's files (the provisioning Job, the normalizer and the fetcher do not mount the
/// SIEM credentials). The forwarder checks them with `check_sink_files`, naming the key.
#[test]
fn sink_credentials_are_checked_by_whoever_uses_them() {
    let text = "[[sinks]]\nname = \"s\"\ntype = \"splunk_hec\"\nendpoint = \"https://x\"\ntoken_file = \"/nonexistent/hec\"\n";
    let c = config::from_toml(text).expect("another pod's Secret is not opened at load");
    let err = c.check_sink_files().unwrap_err();
    assert_eq!(err.key, "sinks[0].token_file");
    assert!(err.to_string().contains("cannot be read"), "{err}");
}
