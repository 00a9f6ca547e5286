//! Golden tests: raw pages of all three types → exact normalized records.
//!
//! Inputs: the reference samples, opsim output, and hand-made edge cases (unknown fields,
//! unicode, IPv6, an invalid IP, null and absent sub-objects, timestamps with 0/3/9 fractional
//! digits and offsets, bad records). Expected outputs live in `tests/golden/*.expected.ndjson`;
//! `UPDATE_GOLDEN=1 cargo test -p oprelay-normalizer --test golden` rewrites them for review.

use std::path::PathBuf;

use oprelay_events::{Feed, LookupKind, LookupRow, LookupSource};
use oprelay_normalizer::lookup::LookupIndex;
use oprelay_normalizer::normalize::{normalize_page, row_id, NormalizedPage, Source};
use serde_json::Value;
use time::OffsetDateTime;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn parse_time() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(1_772_366_400_123_456_789).unwrap()
}

fn source() -> Source {
    Source::for_account("acme", None, Some("ACME \"Prod\" 1Password"))
}

fn index() -> LookupIndex {
    let mut idx = LookupIndex::new();
    let rows = [
        (
            LookupKind::Item,
            "itemaaaaaaaaaaaaaaaaaaaaa1",
            "AWS root",
            Some("2026-01-02T03:04:05Z"),
            None,
        ),
        (
            LookupKind::Vault,
            "vaultaaaaaaaaaaaaaaaaaaaa1",
            "Production",
            None,
            None,
        ),
        (
            LookupKind::Group,
            "groupaaaaaaaaaaaaaaaaaaaa1",
            "Owners",
            None,
            None,
        ),
        (
            LookupKind::User,
            "USERAAAAAAAAAAAAAAAAAAAAA3",
            "Robert (imported)",
            None,
            Some("bob@example.com"),
        ),
        (
            LookupKind::Item,
            "bvwmmwxisuca7wbehrbyqhag54",
            "Demo item",
            None,
            None,
        ),
    ];
    for (kind, uuid, title, updated_at, email) in rows {
        idx.upsert(LookupRow {
            uuid: uuid.into(),
            kind,
            title: title.into(),
            email: email.map(Into::into),
            updated_at: updated_at.map(Into::into),
            source: LookupSource::Imported,
        });
    }
    idx
}

fn reference_page(feed: Feed) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../events/tests/fixtures/{feed}.jsonl"));
    let items: Vec<Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    serde_json::to_vec(&serde_json::json!({"cursor": "ref", "has_more": false, "items": items}))
        .unwrap()
}

fn opsim_page(feed: Feed) -> Vec<u8> {
    let sim = opsim::Sim::new(opsim::SimConfig {
        seed: 7,
        clock: opsim::SimClock::manual(OffsetDateTime::from_unix_timestamp(1_772_366_400).unwrap()),
        ..Default::default()
    });
    let items: Vec<Value> = (0..6).map(|i| sim.event(feed, i)).collect();
    serde_json::to_vec(&serde_json::json!({"cursor": "sim", "has_more": true, "items": items}))
        .unwrap()
}

fn render(page: &NormalizedPage) -> String {
    let mut out = String::from_utf8(page.ndjson.clone()).unwrap();
    for r in &page.rejects {
        out.push_str(&format!(
            "# DLQ ({}): {}\n",
            r.reason,
            String::from_utf8_lossy(&r.body)
        ));
    }
    out
}

fn check(name: &str, feed: Feed, input: &[u8]) -> NormalizedPage {
    let mut idx = index();
    let page = normalize_page(input, feed, &source(), &mut idx, parse_time());
    let got = render(&page);
    let path = dir().join(format!("{name}.expected.ndjson"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(got, want, "{name}: output differs from {}", path.display());
    // Every output line is a JSON object that still holds the original event untouched.
    for line in page.ndjson.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).expect("each line is JSON");
        assert!(v.get("p_row_id").is_some());
    }
    page
}

#[test]
fn reference_samples() {
    for feed in Feed::ALL {
        let input = reference_page(feed);
        let page = check(&format!("reference_{feed}"), feed, &input);
        assert!(
            page.rejects.is_empty(),
            "{feed}: reference samples are all valid"
        );
        // Original fields are kept exactly: strip the p_* fields and compare with the input.
        let items: Value = serde_json::from_slice::<Value>(&input).unwrap()["items"].clone();
        for (line, original) in page
            .ndjson
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .zip(items.as_array().unwrap())
        {
            let mut v: serde_json::Map<String, Value> = serde_json::from_slice(line).unwrap();
            v.retain(|k, _| !k.starts_with("p_"));
            let mut o = original.as_object().unwrap().clone();
            o.retain(|k, _| !k.starts_with("p_"));
            assert_eq!(v, o, "{feed}: original fields changed");
        }
    }
}

#[test]
fn opsim_output() {
    for feed in Feed::ALL {
        let page = check(&format!("opsim_{feed}"), feed, &opsim_page(feed));
        assert_eq!(page.count, 6);
    }
}

#[test]
fn item_usage_edge_cases() {
    let input = std::fs::read(dir().join("edge_item_usages.json")).unwrap();
    let page = check("edge_item_usages", Feed::ItemUsages, &input);
    let lines: Vec<Value> = page
        .ndjson
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        4,
        "the empty object has no uuid and goes to the DLQ"
    );
    assert_eq!(page.rejects.len(), 1);
    // IPv6 is canonicalised; an invalid IP never reaches p_any_ip_addresses.
    assert_eq!(
        lines[0]["p_any_ip_addresses"],
        serde_json::json!(["2001:db8::1"])
    );
    assert!(lines[1].get("p_any_ip_addresses").is_none());
    // 0, 3 and 9 fractional digits, Z and offsets, all rendered in UTC with nine digits.
    assert_eq!(lines[0]["p_event_time"], "2026-03-01 12:00:00.000000000");
    assert_eq!(lines[1]["p_event_time"], "2026-03-01 17:00:00.123000000");
    assert_eq!(lines[2]["p_event_time"], "2026-03-01 10:00:00.123456789");
    // The original timestamp string is untouched.
    assert_eq!(lines[1]["timestamp"], "2026-03-01T12:00:00.123-05:00");
    // No timestamp: event time is the parse time (Panther's rule).
    assert_eq!(lines[3]["p_event_time"], lines[3]["p_parse_time"]);
    // Unknown fields and unicode survive; enrichment of the item and the vault.
    assert_eq!(lines[0]["brand_new_field"]["nested"][1], 2.5);
    assert_eq!(lines[0]["user"]["name"], "Zoë Ünïcødé 🦀");
    let e = &lines[0]["p_enrichment"]["1Password Translation"];
    assert_eq!(e["item_uuid"]["title"], "AWS root");
    assert_eq!(e["item_uuid"]["p_match"], "itemaaaaaaaaaaaaaaaaaaaaa1");
    assert_eq!(e["vault_uuid"]["title"], "Production");
    assert_eq!(
        e["user.uuid"]["source"], "observed",
        "users are learned from the stream"
    );
    assert_eq!(lines[0]["p_source_label"], "ACME \"Prod\" 1Password");
}

#[test]
fn audit_edge_cases_and_dead_letters() {
    let input = std::fs::read(dir().join("edge_audit_events.json")).unwrap();
    let page = check("edge_audit_events", Feed::AuditEvents, &input);
    let reasons: Vec<&str> = page.rejects.iter().map(|r| r.reason.label()).collect();
    assert_eq!(
        reasons,
        ["not_an_object", "no_uuid", "bad_timestamp", "bad_timestamp"]
    );
    assert_eq!(page.count, 2);
    let lines: Vec<Value> = page
        .ndjson
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let e = &lines[0]["p_enrichment"]["1Password Translation"];
    assert_eq!(e["object_uuid"]["title"], "Owners", "gm objects are groups");
    assert_eq!(
        e["aux_uuid"]["title"], "Robert (imported)",
        "imported rows win over observed"
    );
    assert_eq!(e["actor_uuid"]["title"], "Zoë");
    assert_eq!(
        lines[0]["p_any_emails"],
        serde_json::json!(["bob@example.com", "zoe@example.com"])
    );
    assert_eq!(
        lines[0]["p_any_ip_addresses"],
        serde_json::json!(["89.160.20.156"])
    );
    // Unknown object types are looked up in every table.
    assert_eq!(
        lines[1]["p_enrichment"]["1Password Translation"]["object_uuid"]["kind"],
        "vault"
    );
    assert_eq!(
        lines[1]["p_any_emails"],
        serde_json::json!(["Zoe@Example.com", "zoe@example.com"])
    );
}

#[test]
fn bad_pages_go_whole_to_the_dead_letters() {
    for (body, label) in [
        (&b"<html>oops"[..], "page_not_json"),
        (br#"{"items":[]}"#, "not_an_envelope"),
        (br#"[1,2]"#, "not_an_envelope"),
    ] {
        let page = normalize_page(
            body,
            Feed::ItemUsages,
            &source(),
            &mut index(),
            parse_time(),
        );
        assert_eq!(page.count, 0);
        assert_eq!(page.rejects.len(), 1);
        assert_eq!(page.rejects[0].reason.label(), label);
        assert!(page.rejects[0].reason.is_page());
        assert_eq!(page.rejects[0].body, body);
    }
}

#[test]
fn row_ids_are_deterministic_and_distinct() {
    let input = opsim_page(Feed::ItemUsages);
    let a = normalize_page(
        &input,
        Feed::ItemUsages,
        &source(),
        &mut index(),
        parse_time(),
    );
    let b = normalize_page(
        &input,
        Feed::ItemUsages,
        &source(),
        &mut LookupIndex::new(),
        OffsetDateTime::now_utc(),
    );
    let ids = |p: &NormalizedPage| -> Vec<String> {
        p.ndjson
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<Value>(l).unwrap()["p_row_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        ids(&a),
        ids(&b),
        "a replay at another time with other lookups keeps the ids"
    );
    let mut unique = ids(&a);
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6);
    assert!(ids(&a).iter().all(|id| id.len() == 32
        && id
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))));
    assert_ne!(
        row_id(oprelay_events::LogType::ItemUsage, "X"),
        row_id(oprelay_events::LogType::AuditEvent, "X"),
        "the log type is part of the id"
    );
}
