//! `docs/configuration.toml`, the configuration reference, against the real config types: it
//! loads into `Config` (whose structs reject unknown keys, so every key it names exists), and
//! it names every field of every config struct (read from `src/config/*.rs`), so a new key
//! cannot ship undocumented.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use figment::providers::{Format, Toml};
use figment::Figment;
use serde_json::Value;

use oprelay_service::Config;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every source file of the `config` module and its submodules, one after another.
fn config_sources() -> String {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut files = Vec::new();
    walk(&dir, &mut files);
    files.sort();
    assert!(files.len() > 1, "no config sources in {}", dir.display());
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The keys each config struct accepts, from its source: its fields (`pub` or not), renamed
/// by `#[serde(rename = "…")]` where they are; a `#[serde(flatten)]` field holds other
/// structs' keys and is left out.
fn struct_keys(source: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, BTreeSet<String>)> = None;
    let mut rename: Option<String> = None;
    let mut flatten = false;
    for line in source.lines() {
        let header = line
            .strip_prefix("pub struct ")
            .or(line.strip_prefix("struct "));
        if let Some(rest) = header {
            if let Some(name) = rest.strip_suffix(" {") {
                current = Some((name.to_owned(), BTreeSet::new()));
            }
            continue;
        }
        let Some((_, keys)) = current.as_mut() else {
            continue;
        };
        let t = line.trim();
        if line == "}" {
            if let Some((name, keys)) = current.take() {
                out.insert(name, keys);
            }
        } else if let Some(r) = t.strip_prefix("#[serde(rename = \"") {
            rename = r.split('"').next().map(str::to_owned);
        } else if t == "#[serde(flatten)]" {
            flatten = true;
        } else if let Some((name, _)) = t.strip_prefix("pub ").unwrap_or(t).split_once(':') {
            let is_field = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if is_field && !std::mem::take(&mut flatten) {
                keys.insert(rename.take().unwrap_or_else(|| name.to_owned()));
            }
            rename = None;
        }
    }
    out
}

fn keys_of<'a>(values: impl IntoIterator<Item = &'a Value>) -> BTreeSet<String> {
    values
        .into_iter()
        .filter_map(Value::as_object)
        .flat_map(|o| o.keys().cloned())
        .collect()
}

#[test]
fn the_reference_names_every_key_and_loads() {
    let text = read("../../docs/configuration.toml");
    let config: Config = Figment::from(Toml::string(&text))
        .extract()
        .unwrap_or_else(|e| panic!("docs/configuration.toml does not load: {e}"));
    assert!(config.accounts.len() >= 2 && config.sinks.len() >= 5);
    let kinds: BTreeSet<&str> = config.sinks.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds.len(), 5, "one example of every sink type: {kinds:?}");

    let doc: Value = Figment::from(Toml::string(&text))
        .extract()
        .expect("the reference as data");
    let structs = struct_keys(&config_sources());
    let sinks: Vec<&Value> = doc["sinks"].as_array().unwrap().iter().collect();
    // Every sink takes the shared keys (`RawSink`'s); the rest belong to its type's struct.
    let shared: BTreeSet<String> = structs["RawSink"].clone();
    let own_keys = |kind: &str| -> BTreeSet<String> {
        let of_kind = sinks.iter().copied().filter(|s| s["type"] == kind);
        keys_of(of_kind).difference(&shared).cloned().collect()
    };
    let checks: Vec<(&str, BTreeSet<String>)> = vec![
        ("Config", keys_of([&doc])),
        ("NatsConfig", keys_of([&doc["nats"]])),
        ("TelemetryConfig", keys_of([&doc["telemetry"]])),
        ("FetcherConfig", keys_of([&doc["fetcher"]])),
        (
            "AccountConfig",
            keys_of(doc["accounts"].as_array().unwrap()),
        ),
        ("RawSink", shared.clone()),
        ("SplunkHecConfig", own_keys("splunk_hec")),
        ("ElasticsearchConfig", own_keys("elasticsearch")),
        ("SyslogConfig", own_keys("syslog")),
        ("HttpConfig", own_keys("http")),
        ("FileConfig", own_keys("file")),
        ("BatchConfig", keys_of(sinks.iter().map(|s| &s["batch"]))),
        ("TlsConfig", keys_of(sinks.iter().map(|s| &s["tls"]))),
        ("HealthwatchConfig", keys_of([&doc["healthwatch"]])),
        (
            "NotifyConfig",
            keys_of(doc["healthwatch"]["notify"].as_array().unwrap()),
        ),
    ];
    for (name, documented) in checks {
        let real = structs
            .get(name)
            .unwrap_or_else(|| panic!("no struct {name} in src/config/"));
        assert!(!real.is_empty(), "{name} has no fields?");
        let missing: Vec<_> = real.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(real).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "{name}: keys missing from docs/configuration.toml {missing:?}, keys it names that {name} lacks {unknown:?}"
        );
    }
}
