//! The schemas in `docs/schemas/` are the subscriber contract. The generated ones must match
//! the types (`just schemas` rewrites them, `OPRELAY_UPDATE_SCHEMAS=1`); every file must be a
//! valid draft 2020-12 schema whose `$id` names it; and no published schema may change in a
//! way that breaks a subscriber unless it gets a new name (a new major version): the copies of
//! the last release in `docs/schemas/released/` are what is compared against.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas")
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    out.sort();
    out
}

#[test]
fn generated_schemas_match_the_types() {
    let update = std::env::var_os("OPRELAY_UPDATE_SCHEMAS").is_some();
    for (name, schema) in oprelay_events::schemas::generated() {
        let path = schemas_dir().join(format!("{name}.json"));
        if update {
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
            continue;
        }
        assert!(
            path.is_file() && read(&path) == schema,
            "{} is stale: run `just schemas`",
            path.display()
        );
    }
}

#[test]
fn every_schema_is_valid_and_named_after_its_file() {
    let all = files(&schemas_dir());
    assert!(all.len() >= 8, "{all:?}");
    for path in all {
        let schema = read(&path);
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            schema["$id"],
            format!("urn:oprelay:{stem}"),
            "{}",
            path.display()
        );
        assert!(
            stem.rsplit('.').next().is_some_and(|v| v.starts_with('v')),
            "{stem}: the last part of a schema's name is its major version"
        );
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{}: not a valid JSON Schema: {e}", path.display());
        }
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Ways `new` can break a subscriber who relied on `old` (both at the same path). Additions
/// of optional properties, looser constraints and new descriptions are fine.
fn breaking(old: &Value, new: &Value, at: &str, found: &mut Vec<String>) {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        if old != new {
            found.push(format!("{at}: {old} became {new}"));
        }
        return;
    };
    for key in [
        "type", "const", "enum", "format", "pattern", "anyOf", "oneOf", "items",
    ] {
        match (o.get(key), n.get(key)) {
            (Some(a), Some(b)) if key == "items" || key == "anyOf" || key == "oneOf" => {
                breaking(a, b, &format!("{at}.{key}"), found)
            }
            // Any other change counts, enums included: removing a value breaks a consumer that
            // matched on it, and adding one may surprise a strict one.
            (Some(a), Some(b)) if a != b => found.push(format!("{at}: {key} {a} became {b}")),
            (None, Some(b)) if key != "format" => found.push(format!("{at}: {key} {b} added")),
            (Some(a), None) if key == "const" || key == "type" => {
                found.push(format!("{at}: {key} {a} removed"))
            }
            _ => {}
        }
    }
    let required = |v: Option<&Value>| -> BTreeSet<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect()
    };
    for r in required(n.get("required")).difference(&required(o.get("required"))) {
        found.push(format!("{at}: {r} became required"));
    }
    for r in required(o.get("required")).difference(&required(n.get("required"))) {
        found.push(format!("{at}: {r} is no longer always there"));
    }
    if o.get("additionalProperties") != Some(&Value::Bool(false))
        && n.get("additionalProperties") == Some(&Value::Bool(false))
    {
        found.push(format!("{at}: closed to unknown properties"));
    }
    let props = |v: &serde_json::Map<String, Value>| v.get("properties").cloned();
    if let (Some(op), Some(np)) = (props(o), props(n)) {
        for (name, old_prop) in op.as_object().into_iter().flatten() {
            match np.get(name) {
                Some(new_prop) => breaking(old_prop, new_prop, &format!("{at}.{name}"), found),
                None => found.push(format!("{at}.{name} removed")),
            }
        }
    }
}

#[test]
fn no_released_schema_changes_incompatibly_under_its_name() {
    let released = schemas_dir().join("released");
    let mut releases = files_in_dirs(&released);
    releases.sort();
    let last = releases.last().expect("docs/schemas/released/<version>/");
    let mut found = Vec::new();
    for path in files(last) {
        let name = path.file_name().unwrap();
        let current = schemas_dir().join(name);
        if !current.is_file() {
            // Renamed to a new major version: allowed only when that version exists.
            let stem = name.to_string_lossy();
            let base = stem.rsplit_once(".v").map(|(b, _)| b).unwrap_or(&stem);
            let successor = files(&schemas_dir()).into_iter().any(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{base}.v")))
            });
            assert!(successor, "{stem} was removed without a new major version");
            continue;
        }
        breaking(
            &read(&path),
            &read(&current),
            &name.to_string_lossy(),
            &mut found,
        );
    }
    assert!(
        found.is_empty(),
        "breaking changes to released schemas; publish them under a new major version (…v2) \
         instead:\n{}",
        found.join("\n")
    );
}

fn files_in_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect()
}

#[test]
fn the_compatibility_check_catches_what_breaks_a_subscriber() {
    let old = serde_json::json!({"type": "object", "required": ["a"], "properties": {
        "a": {"type": "string"}, "b": {"type": "integer"}, "c": {"enum": ["x", "y"]}}});
    let mut found = Vec::new();
    let fine = serde_json::json!({"type": "object", "required": ["a"], "properties": {
        "a": {"type": "string", "description": "now documented"}, "b": {"type": "integer"},
        "c": {"enum": ["x", "y"]}, "d": {"type": "string"}}});
    breaking(&old, &fine, "s", &mut found);
    assert!(found.is_empty(), "{found:?}");
    for bad in [
        serde_json::json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"enum": ["x", "y"]}}}),
        serde_json::json!({"type": "object", "required": ["a", "b"], "properties": {"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"enum": ["x", "y"]}}}),
        serde_json::json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}, "c": {"enum": ["x", "y"]}}}),
        serde_json::json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"enum": ["x"]}}}),
        serde_json::json!({"type": "object", "required": ["a"], "additionalProperties": false, "properties": {"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"enum": ["x", "y"]}}}),
    ] {
        let mut found = Vec::new();
        breaking(&old, &bad, "s", &mut found);
        assert!(!found.is_empty(), "{bad}");
    }
}
