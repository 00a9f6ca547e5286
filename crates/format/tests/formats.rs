//! Golden tests of the three output formats on all three log types. Input: the normalizer's
//! own golden output for the reference samples. `UPDATE_GOLDEN=1` rewrites the expectations.

use std::path::PathBuf;

use oprelay_events::Feed;
use oprelay_format::{render, OutputFormat};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn normalized(feed: Feed) -> Vec<String> {
    let p = root().join(format!(
        "../normalizer/tests/golden/reference_{feed}.expected.ndjson"
    ));
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn originals(feed: Feed) -> Vec<Value> {
    let p = root().join(format!("../events/tests/fixtures/{feed}.jsonl"));
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn golden(name: &str, got: &str) {
    let path = root().join(format!("tests/golden/{name}.expected.ndjson"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(got, want, "{name} differs from {}", path.display());
}

fn rendered(feed: Feed, format: OutputFormat) -> Vec<Value> {
    let mut text = String::new();
    let mut out = Vec::new();
    for line in normalized(feed) {
        let r = render(line.into_bytes().into(), format, "acme", feed).expect("renders");
        text.push_str(std::str::from_utf8(&r.body).unwrap());
        text.push('\n');
        out.push(serde_json::from_slice(&r.body).unwrap());
    }
    let name = match format {
        OutputFormat::Panther => "panther",
        OutputFormat::Raw => "raw",
        OutputFormat::Ecs => "ecs",
    };
    golden(&format!("{name}_{feed}"), &text);
    out
}

#[test]
fn panther_is_the_normalized_record() {
    for feed in Feed::ALL {
        for (r, line) in rendered(feed, OutputFormat::Panther)
            .iter()
            .zip(normalized(feed))
        {
            assert_eq!(r, &serde_json::from_str::<Value>(&line).unwrap());
        }
    }
}

#[test]
fn raw_is_exactly_what_1password_sent() {
    for feed in Feed::ALL {
        for (r, mut original) in rendered(feed, OutputFormat::Raw)
            .into_iter()
            .zip(originals(feed))
        {
            // Panther's fixtures carry p_* fields of their own; the normalizer replaced them.
            original
                .as_object_mut()
                .unwrap()
                .retain(|k, _| !k.starts_with("p_"));
            assert_eq!(r, original, "{feed}");
        }
    }
}

#[test]
fn ecs_maps_the_common_fields() {
    let signins = rendered(Feed::SignInAttempts, OutputFormat::Ecs);
    let s = &signins[0];
    assert_eq!(s["@timestamp"], "2021-08-11T14:28:03.000000000Z");
    assert_eq!(
        s["event"]["category"],
        serde_json::json!(["authentication"])
    );
    assert_eq!(s["event"]["outcome"], "success");
    assert_eq!(s["event"]["action"], "success");
    assert_eq!(s["user"]["email"], "email@1password.com");
    assert_eq!(s["source"]["ip"], "1.1.1.1");
    assert_eq!(s["os"]["name"], "Android");
    assert_eq!(
        s["onepassword"]["type"], "credentials_ok",
        "1Password's own fields under onepassword.*"
    );
    assert_eq!(signins[1]["event"]["outcome"], "failure");

    let usages = rendered(Feed::ItemUsages, OutputFormat::Ecs);
    assert_eq!(usages[0]["source"]["geo"]["city_name"], "Toronto");
    assert_eq!(
        usages[0]["source"]["geo"]["location"],
        serde_json::json!({"lat": 43.64, "lon": -79.433})
    );
    assert_eq!(usages[0]["event"]["action"], "reveal");
    assert_eq!(
        usages[0]["oprelay"]["enrichment"]["1Password Translation"]["item_uuid"]["title"],
        "Demo item"
    );

    let audits = rendered(Feed::AuditEvents, OutputFormat::Ecs);
    assert_eq!(audits[0]["source"]["ip"], "89.160.20.156", "session.ip");
    assert_eq!(audits[0]["user"]["id"], "GLF6WUEKS5CSNDJ2OG6TCZD3M4");
    assert_eq!(audits[0]["event"]["action"], "suspend");
    assert_eq!(audits[0]["event"]["dataset"], "1password.audit_events");
}
