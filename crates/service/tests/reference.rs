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

/// Every source file of the `config` module, one after another.
fn config_sources() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    assert!(files.len() > 1, "no config sources in {}", dir.display());
    files
        .iter()
        .map(|p| {
            read(&format!(
                "src/config/{}",
                p.file_name().unwrap().to_string_lossy()
            ))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The keys each config struct accepts, from its source: `pub` fields, renamed by
/// `#[serde(rename = "…")]` where they are.
fn struct_keys(source: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, BTreeSet<String>)> = None;
    let mut rename: Option<String> = None;
    for line in source.lines() {
        if let Some(rest) = line.strip_prefix("pub struct ") {
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
        } else if let Some(field) = t.strip_prefix("pub ") {
            if let Some((name, _)) = field.split_once(':') {
                keys.insert(rename.take().unwrap_or_else(|| name.to_owned()));
            }
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
    let checks: Vec<(&str, BTreeSet<String>)> = vec![
        ("Config", keys_of([&doc])),
        ("NatsConfig", keys_of([&doc["nats"]])),
        ("TelemetryConfig", keys_of([&doc["telemetry"]])),
        ("FetcherConfig", keys_of([&doc["fetcher"]])),
        (
            "AccountConfig",
            keys_of(doc["accounts"].as_array().unwrap()),
        ),
        ("SinkConfig", keys_of(sinks.iter().copied())),
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
