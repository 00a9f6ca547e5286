//! Every sample event in the reference material round-trips losslessly through the typed model.

use oprelay_events::{
    AuditAction, AuditEvent, Feed, Field, Introspection, ItemUsage, ItemUsageAction, Page,
    SignInAttempt, SignInCategory,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn lines(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn round_trip<T: DeserializeOwned + Serialize>(original: &Value) -> T {
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("parse failed: {e}\n{original}"));
    let back = serde_json::to_value(&typed).expect("serialize");
    assert_eq!(&back, original, "round trip changed the event");
    // Through bytes too, as the services do.
    let bytes = serde_json::to_vec(&typed).expect("serialize");
    let again: Value = serde_json::from_slice(&bytes).expect("reparse");
    assert_eq!(&again, original);
    typed
}

#[test]
fn sign_in_samples_round_trip() {
    let samples = lines("signin_attempts");
    assert!(samples.len() >= 5);
    for s in &samples {
        round_trip::<SignInAttempt>(s);
    }
    let first: SignInAttempt = round_trip(&samples[0]);
    assert_eq!(first.category, Field::Present(SignInCategory::Success));
    assert_eq!(first.details, Field::Null, "`details: null` stays null");
    assert!(
        first.location.is_absent(),
        "a missing location stays missing"
    );
}

#[test]
fn item_usage_samples_round_trip() {
    let samples = lines("item_usages");
    assert!(samples.len() >= 4);
    for s in &samples {
        round_trip::<ItemUsage>(s);
    }
    let first: ItemUsage = round_trip(&samples[0]);
    assert_eq!(first.action, Field::Present(ItemUsageAction::Reveal));
    let older: ItemUsage = round_trip(&samples[1]);
    assert!(older.action.is_absent());
}

#[test]
fn audit_samples_round_trip() {
    let samples = lines("audit_events");
    assert!(samples.len() >= 3);
    for s in &samples {
        round_trip::<AuditEvent>(s);
    }
    let first: AuditEvent = round_trip(&samples[0]);
    assert_eq!(first.action, Field::Present(AuditAction::Suspend));
    let session = first.session.get().expect("session");
    assert_eq!(
        session.login_time.get().map(|t| t.as_str()),
        Some("2022-10-24T21:07:34.703106271Z")
    );
}

#[test]
fn pages_round_trip_and_keep_their_cursor() {
    let pages = lines("pages");
    assert!(!pages.is_empty());
    for p in &pages {
        let feed: Feed = serde_json::from_value(p["feed"].clone()).expect("feed");
        let page = &p["page"];
        match feed {
            Feed::SignInAttempts => {
                let typed: Page<SignInAttempt> = round_trip(page);
                assert_eq!(typed.cursor, page["cursor"].as_str().unwrap());
            }
            Feed::ItemUsages => {
                round_trip::<Page<ItemUsage>>(page);
            }
            Feed::AuditEvents => {
                round_trip::<Page<AuditEvent>>(page);
            }
        }
    }
}

#[test]
fn introspection_samples_parse() {
    for s in lines("introspect") {
        let i: Introspection = round_trip(&s);
        assert!(i.features.iter().any(|f| Feed::from_api_name(f).is_some()));
    }
}

#[test]
fn unknown_enum_values_and_fields_survive() {
    let raw = serde_json::json!({
        "uuid": "X", "timestamp": "2026-01-01T00:00:00Z",
        "action": "teleport", "object_type": "hologram",
        "actor_details": {"uuid": "A", "email": "a@example.com", "pronouns": "they"},
        "brand_new": {"nested": [1, 2.5, null, "x"]}
    });
    let ev: AuditEvent = round_trip(&raw);
    assert_eq!(
        ev.action,
        Field::Present(AuditAction::Other("teleport".into()))
    );
    assert!(!ev.action.get().unwrap().is_known());
    assert!(ev.extra.contains_key("brand_new"));
}

#[test]
fn a_bad_timestamp_is_an_error_that_names_the_value() {
    let raw = serde_json::json!({"uuid": "X", "timestamp": "last tuesday"});
    let err = serde_json::from_value::<ItemUsage>(raw).unwrap_err();
    assert!(err.to_string().contains("last tuesday"), "{err}");
}
