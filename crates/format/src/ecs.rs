//! The Elastic Common Schema rendering of a record: `@timestamp`, `event.*`, `user.*`,
//! `source.*`, `os.*`, with every 1Password field kept under `onepassword.*` (as Elastic's own
//! 1Password integration does) and oprelay's enrichment under `oprelay.*`.

use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use oprelay_events::Feed;

use super::{parse_panther_time, rfc3339};

fn take(m: &mut Map<String, Value>, k: &str) -> Option<Value> {
    m.remove(k).filter(|v| !v.is_null())
}

fn put(obj: &mut Map<String, Value>, path: &[&str], v: Option<Value>) {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return;
    };
    let mut cur = obj;
    for key in &path[..path.len() - 1] {
        let entry = cur
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        cur = next;
    }
    cur.insert(path[path.len() - 1].to_owned(), v);
}

/// The record in ECS. `rec` is the normalized record as a JSON object; its `p_*` fields are
/// taken out, and what remains is 1Password's event, kept whole under `onepassword`.
pub fn ecs(mut rec: Map<String, Value>, feed: Feed, event_time: OffsetDateTime) -> Value {
    let mut out = Map::new();
    out.insert("@timestamp".into(), json!(rfc3339(event_time)));
    out.insert("ecs".into(), json!({"version": "8.11.0"}));
    let mut p_fields = Map::new();
    rec.retain(|k, v| {
        if k.starts_with("p_") {
            p_fields.insert(k.clone(), v.clone());
            false
        } else {
            true
        }
    });
    event(&mut out, &mut rec, &p_fields, feed);
    user(&mut out, &rec, feed);
    source(&mut out, &rec);
    related(&mut out, &p_fields);
    // Everything 1Password sent, under its own namespace, and oprelay's enrichment beside it.
    out.insert("onepassword".into(), Value::Object(rec));
    if let Some(e) = p_fields.remove("p_enrichment") {
        put(&mut out, &["oprelay", "enrichment"], Some(e));
    }
    put(
        &mut out,
        &["oprelay", "row_id"],
        p_fields.remove("p_row_id"),
    );
    put(
        &mut out,
        &["oprelay", "source_label"],
        p_fields.remove("p_source_label"),
    );
    Value::Object(out)
}

/// `event.*`: the id (the event's uuid, taken out of the original), where it came from, when
/// oprelay parsed it, and what kind of event it is.
fn event(
    out: &mut Map<String, Value>,
    rec: &mut Map<String, Value>,
    p: &Map<String, Value>,
    feed: Feed,
) {
    let parse_time = p
        .get("p_parse_time")
        .and_then(Value::as_str)
        .and_then(parse_panther_time)
        .map(rfc3339);
    put(out, &["event", "id"], take(rec, "uuid"));
    put(out, &["event", "kind"], Some(json!("event")));
    put(out, &["event", "module"], Some(json!("1password")));
    put(
        out,
        &["event", "dataset"],
        Some(json!(format!("1password.{feed}"))),
    );
    put(out, &["event", "created"], parse_time.map(Value::from));
    let (category, kind, action, outcome) = classify(rec, feed);
    put(out, &["event", "category"], Some(json!([category])));
    put(out, &["event", "type"], Some(json!([kind])));
    put(out, &["event", "action"], action);
    put(out, &["event", "outcome"], Some(json!(outcome)));
}

/// ECS's category, type, action and outcome of a 1Password event: a sign-in attempt
/// succeeds or fails by its `category`; item usages and audit events are things that happened.
fn classify(
    rec: &Map<String, Value>,
    feed: Feed,
) -> (&'static str, &'static str, Option<Value>, &'static str) {
    match feed {
        Feed::SignInAttempts => {
            let outcome = match rec.get("category").and_then(Value::as_str) {
                Some("success" | "firewall_reported_success") => "success",
                None | Some("") => "unknown",
                Some(_) => "failure",
            };
            (
                "authentication",
                "start",
                rec.get("category").cloned(),
                outcome,
            )
        }
        Feed::ItemUsages => ("iam", "access", rec.get("action").cloned(), "success"),
        Feed::AuditEvents => (
            "configuration",
            "change",
            rec.get("action").cloned(),
            "success",
        ),
    }
}

/// `user.*`: the person the event is about (the target of a sign-in, the user of an item, the
/// actor of an audit event, or at least the actor's uuid).
fn user(out: &mut Map<String, Value>, rec: &Map<String, Value>, feed: Feed) {
    let user_key = match feed {
        Feed::SignInAttempts => "target_user",
        Feed::ItemUsages => "user",
        Feed::AuditEvents => "actor_details",
    };
    if let Some(Value::Object(user)) = rec.get(user_key) {
        put(out, &["user", "id"], user.get("uuid").cloned());
        put(out, &["user", "full_name"], user.get("name").cloned());
        put(out, &["user", "email"], user.get("email").cloned());
    }
    if feed == Feed::AuditEvents && out.get("user").is_none_or(|u| u.get("id").is_none()) {
        put(out, &["user", "id"], rec.get("actor_uuid").cloned());
    }
}

/// `source.*`, `client.*`, `os.*`, `user_agent.*`: where the event came from, from the
/// event's `client`, `session` and `location`.
fn source(out: &mut Map<String, Value>, rec: &Map<String, Value>) {
    if let Some(Value::Object(client)) = rec.get("client") {
        for (path, key) in [
            (&["source", "ip"][..], "ip_address"),
            (&["client", "ip"], "ip_address"),
            (&["os", "name"], "os_name"),
            (&["os", "version"], "os_version"),
            (&["user_agent", "name"], "app_name"),
            (&["user_agent", "version"], "app_version"),
        ] {
            put(out, path, client.get(key).cloned());
        }
    }
    if let Some(Value::Object(session)) = rec.get("session") {
        put(out, &["source", "ip"], session.get("ip").cloned());
    }
    if let Some(Value::Object(loc)) = rec.get("location") {
        for (name, key) in [
            ("country_name", "country"),
            ("region_name", "region"),
            ("city_name", "city"),
        ] {
            put(out, &["source", "geo", name], loc.get(key).cloned());
        }
        if let (Some(lat), Some(lon)) = (loc.get("latitude"), loc.get("longitude")) {
            put(
                out,
                &["source", "geo", "location"],
                Some(json!({"lat": lat, "lon": lon})),
            );
        }
    }
}

/// `related.*`: every IP address and email the normalizer found in the event.
fn related(out: &mut Map<String, Value>, p: &Map<String, Value>) {
    let mut ips: Vec<Value> = p
        .get("p_any_ip_addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    ips.dedup();
    if !ips.is_empty() {
        put(out, &["related", "ip"], Some(Value::Array(ips)));
    }
    if let Some(emails) = p.get("p_any_emails") {
        put(out, &["related", "user"], Some(emails.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(feed: Feed, json: Value) -> Value {
        let Value::Object(m) = json else {
            panic!("an object")
        };
        let t = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        ecs(m, feed, t)
    }

    #[test]
    fn a_failed_sign_in_maps_user_source_and_outcome() {
        let out = record(
            Feed::SignInAttempts,
            json!({
                "uuid": "56YE2TYN2VFYRLNSHKPW5NVT5E",
                "category": "credentials_failed",
                "target_user": {"uuid": "IR7VJHJ36JHINBFAD7V2T5MP3E", "name": "Ada", "email": "ada@example.com"},
                "client": {"ip_address": "203.0.113.7", "os_name": "MacOSX", "app_name": "1Password"},
                "location": {"country": "CA", "city": "Toronto", "latitude": 43.6, "longitude": -79.4},
                "p_parse_time": "2026-01-01 00:00:01.000000000",
                "p_any_ip_addresses": ["203.0.113.7"],
                "p_any_emails": ["ada@example.com"],
                "p_row_id": "abc",
                "p_source_label": "acme"
            }),
        );
        assert_eq!(out["@timestamp"], "2026-01-01T00:00:00.000000000Z");
        assert_eq!(out["event"]["id"], "56YE2TYN2VFYRLNSHKPW5NVT5E");
        assert_eq!(out["event"]["dataset"], "1password.signin_attempts");
        assert_eq!(out["event"]["created"], "2026-01-01T00:00:01.000000000Z");
        assert_eq!(out["event"]["category"], json!(["authentication"]));
        assert_eq!(out["event"]["outcome"], "failure");
        assert_eq!(out["event"]["action"], "credentials_failed");
        assert_eq!(out["user"]["email"], "ada@example.com");
        assert_eq!(out["source"]["ip"], "203.0.113.7");
        assert_eq!(out["os"]["name"], "MacOSX");
        assert_eq!(
            out["source"]["geo"]["location"],
            json!({"lat": 43.6, "lon": -79.4})
        );
        assert_eq!(out["related"]["ip"], json!(["203.0.113.7"]));
        assert_eq!(out["related"]["user"], json!(["ada@example.com"]));
        assert_eq!(out["oprelay"]["row_id"], "abc");
        assert_eq!(out["oprelay"]["source_label"], "acme");
        let original = out["onepassword"].as_object().unwrap();
        assert!(original.contains_key("target_user"));
        assert!(!original.contains_key("uuid") && !original.contains_key("p_row_id"));
    }

    #[test]
    fn audit_events_fall_back_to_the_actor_uuid_and_item_usages_are_access() {
        let audit = record(
            Feed::AuditEvents,
            json!({"uuid": "A", "action": "join", "actor_uuid": "U1", "session": {"ip": "198.51.100.2"}}),
        );
        assert_eq!(audit["user"]["id"], "U1");
        assert_eq!(audit["source"]["ip"], "198.51.100.2");
        assert_eq!(audit["event"]["type"], json!(["change"]));
        assert_eq!(audit["event"]["outcome"], "success");
        let usage = record(
            Feed::ItemUsages,
            json!({"uuid": "B", "action": "reveal", "user": {"uuid": "U2"}, "p_enrichment": {"x": 1}}),
        );
        assert_eq!(usage["user"]["id"], "U2");
        assert_eq!(usage["event"]["category"], json!(["iam"]));
        assert_eq!(usage["event"]["action"], "reveal");
        assert_eq!(usage["oprelay"]["enrichment"], json!({"x": 1}));
        assert!(usage.get("related").is_none(), "no addresses, no related");
    }
}
