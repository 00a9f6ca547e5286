//! The Elastic Common Schema rendering of a record: `@timestamp`, `event.*`, `user.*`,
//! `source.*`, `os.*`, with every 1Password field kept under `onepassword.*` (as Elastic's own
//! 1Password integration does) and oprelay's enrichment under `oprelay.*`.
//!
//! The record is read once, at its top level, with each value left as the text it is
//! ([`RawValue`]); only the few values ECS needs are parsed, and the output is written from
//! borrowed slices of the input. Building a `serde_json::Value` tree per record, as this did
//! before, cost three to four times as much for the same output.

use std::borrow::Cow;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use time::OffsetDateTime;

use oprelay_events::Feed;

use super::{parse_panther_time, rfc3339};

/// The record in ECS, as one JSON object. `line` is the normalized record: its `p_*` fields
/// feed `event.created`, `related.*` and `oprelay.*`, and what remains is 1Password's event,
/// kept whole under `onepassword` (less its `uuid`, which is `event.id`).
pub fn ecs(line: &[u8], feed: Feed, event_time: OffsetDateTime) -> serde_json::Result<Vec<u8>> {
    // Checked as UTF-8 once here, so that the values borrowed from it need no check each.
    let text = std::str::from_utf8(line).map_err(|e| {
        <serde_json::Error as serde::de::Error>::custom(format_args!("not UTF-8: {e}"))
    })?;
    let rec: Fields = serde_json::from_str(text)?;
    let mut out = Ecs {
        timestamp: rfc3339(event_time),
        client: Ip::default(),
        ecs: EcsVersion { version: "8.11.0" },
        event: event(&rec, feed),
        onepassword: Original(&rec),
        oprelay: Oprelay {
            enrichment: rec.get("p_enrichment"),
            row_id: rec.get("p_row_id"),
            source_label: rec.get("p_source_label"),
        },
        os: NameVersion::default(),
        related: related(&rec),
        source: Source::default(),
        user: User::default(),
        user_agent: NameVersion::default(),
    };
    user(&mut out.user, &rec, feed);
    source(&mut out, &rec);
    // The original event and the ECS fields beside it: room for both, so the buffer is not
    // grown and copied while it is written.
    let mut body = Vec::with_capacity(line.len() + 1024);
    serde_json::to_writer(&mut body, &out)?;
    Ok(body)
}

/// The top-level fields of a normalized record in their order, values unparsed.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// The value of a top-level field, unless it is absent or `null`.
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| !is_null(v))
    }

    /// A field that is a JSON object, read as `T` (its other keys ignored).
    fn object<T: Deserialize<'a>>(&self, key: &str) -> Option<T> {
        let v = self.get(key)?;
        if !v.get().starts_with('{') {
            return None;
        }
        serde_json::from_str(v.get()).ok()
    }

    /// A field that is a JSON string.
    fn text(&self, key: &str) -> Option<Cow<'a, str>> {
        let v = self.get(key)?;
        serde_json::from_str::<Text>(v.get()).ok().map(|t| t.0)
    }
}

fn is_null(v: &RawValue) -> bool {
    v.get() == "null"
}

/// A string, borrowed from the input unless it has escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Each;
        impl<'de> Visitor<'de> for Each {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a normalized record (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Text(k)) = map.next_key()? {
                    let v: &'de RawValue = map.next_value()?;
                    fields.push((k, v));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Each)
    }
}

/// 1Password's event under `onepassword`: every field but the `p_*` ones and `uuid`.
struct Original<'r, 'a>(&'r Fields<'a>);

impl Serialize for Original<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in &self.0 .0 {
            if !k.starts_with("p_") && k != "uuid" {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

type Raw<'a> = Option<&'a RawValue>;

/// The ECS document. Fields are in alphabetical order, as the ECS reference lists them; an
/// empty object is left out.
#[derive(Serialize)]
struct Ecs<'r, 'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    #[serde(skip_serializing_if = "Ip::is_empty")]
    client: Ip<'a>,
    ecs: EcsVersion,
    event: Event<'a>,
    onepassword: Original<'r, 'a>,
    #[serde(skip_serializing_if = "Oprelay::is_empty")]
    oprelay: Oprelay<'a>,
    #[serde(skip_serializing_if = "NameVersion::is_empty")]
    os: NameVersion<'a>,
    #[serde(skip_serializing_if = "Related::is_empty")]
    related: Related<'a>,
    #[serde(skip_serializing_if = "Source::is_empty")]
    source: Source<'a>,
    #[serde(skip_serializing_if = "User::is_empty")]
    user: User<'a>,
    #[serde(skip_serializing_if = "NameVersion::is_empty")]
    user_agent: NameVersion<'a>,
}

#[derive(Serialize)]
struct EcsVersion {
    version: &'static str,
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Raw<'a>,
    category: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    dataset: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Raw<'a>,
    kind: &'static str,
    module: &'static str,
    outcome: &'static str,
    #[serde(rename = "type")]
    kind_of_change: [&'static str; 1],
}

#[derive(Serialize, Default)]
struct Ip<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Raw<'a>,
}

impl Ip<'_> {
    fn is_empty(&self) -> bool {
        self.ip.is_none()
    }
}

#[derive(Serialize, Default)]
struct NameVersion<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Raw<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Raw<'a>,
}

impl NameVersion<'_> {
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.version.is_none()
    }
}

#[derive(Serialize, Default)]
struct Oprelay<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    enrichment: Raw<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    row_id: Raw<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_label: Raw<'a>,
}

impl Oprelay<'_> {
    fn is_empty(&self) -> bool {
        self.enrichment.is_none() && self.row_id.is_none() && self.source_label.is_none()
    }
}

#[derive(Serialize, Default)]
struct Related<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ip: Vec<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Raw<'a>,
}

impl Related<'_> {
    fn is_empty(&self) -> bool {
        self.ip.is_empty() && self.user.is_none()
    }
}

#[derive(Serialize, Default)]
struct Source<'a> {
    #[serde(skip_serializing_if = "Geo::is_empty")]
    geo: Geo<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Raw<'a>,
}

impl Source<'_> {
    fn is_empty(&self) -> bool {
        self.geo.is_empty() && self.ip.is_none()
    }
}

#[derive(Serialize, Default)]
struct Geo<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    city_name: Raw<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country_name: Raw<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<LatLon<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region_name: Raw<'a>,
}

impl Geo<'_> {
    fn is_empty(&self) -> bool {
        self.city_name.is_none()
            && self.country_name.is_none()
            && self.location.is_none()
            && self.region_name.is_none()
    }
}

#[derive(Serialize)]
struct LatLon<'a> {
    lat: &'a RawValue,
    lon: &'a RawValue,
}

#[derive(Serialize, Default)]
struct User<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Raw<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    full_name: Raw<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Raw<'a>,
}

impl User<'_> {
    fn is_empty(&self) -> bool {
        self.email.is_none() && self.full_name.is_none() && self.id.is_none()
    }
}

/// `event.*`: the id (the event's uuid, taken out of the original), where it came from, when
/// oprelay parsed it, and what kind of event it is.
fn event<'a>(rec: &Fields<'a>, feed: Feed) -> Event<'a> {
    let (category, kind_of_change, action, outcome) = classify(rec, feed);
    Event {
        action,
        category: [category],
        created: rec
            .text("p_parse_time")
            .and_then(|t| parse_panther_time(&t))
            .map(rfc3339),
        dataset: match feed {
            Feed::SignInAttempts => "1password.signin_attempts",
            Feed::ItemUsages => "1password.item_usages",
            Feed::AuditEvents => "1password.audit_events",
        },
        id: rec.get("uuid"),
        kind: "event",
        module: "1password",
        outcome,
        kind_of_change: [kind_of_change],
    }
}

/// ECS's category, type, action and outcome of a 1Password event: a sign-in attempt
/// succeeds or fails by its `category`; item usages and audit events are things that happened.
fn classify<'a>(
    rec: &Fields<'a>,
    feed: Feed,
) -> (&'static str, &'static str, Raw<'a>, &'static str) {
    match feed {
        Feed::SignInAttempts => {
            let outcome = match rec.text("category").as_deref() {
                Some("success" | "firewall_reported_success") => "success",
                None | Some("") => "unknown",
                Some(_) => "failure",
            };
            ("authentication", "start", rec.get("category"), outcome)
        }
        Feed::ItemUsages => ("iam", "access", rec.get("action"), "success"),
        Feed::AuditEvents => ("configuration", "change", rec.get("action"), "success"),
    }
}

/// The fields of a person that ECS's `user.*` takes.
#[derive(Deserialize)]
struct Person<'a> {
    #[serde(borrow)]
    uuid: Raw<'a>,
    #[serde(borrow)]
    name: Raw<'a>,
    #[serde(borrow)]
    email: Raw<'a>,
}

/// `user.*`: the person the event is about (the target of a sign-in, the user of an item, the
/// actor of an audit event, or at least the actor's uuid).
fn user<'a>(out: &mut User<'a>, rec: &Fields<'a>, feed: Feed) {
    let key = match feed {
        Feed::SignInAttempts => "target_user",
        Feed::ItemUsages => "user",
        Feed::AuditEvents => "actor_details",
    };
    if let Some(p) = rec.object::<Person>(key) {
        *out = User {
            email: p.email,
            full_name: p.name,
            id: p.uuid,
        };
    }
    if feed == Feed::AuditEvents && out.id.is_none() {
        out.id = rec.get("actor_uuid");
    }
}

/// What ECS takes from the event's `client`.
#[derive(Deserialize)]
struct Client<'a> {
    #[serde(borrow)]
    ip_address: Raw<'a>,
    #[serde(borrow)]
    os_name: Raw<'a>,
    #[serde(borrow)]
    os_version: Raw<'a>,
    #[serde(borrow)]
    app_name: Raw<'a>,
    #[serde(borrow)]
    app_version: Raw<'a>,
}

/// What ECS takes from the event's `session`.
#[derive(Deserialize)]
struct Session<'a> {
    #[serde(borrow)]
    ip: Raw<'a>,
}

/// What ECS takes from the event's `location`.
#[derive(Deserialize)]
struct Location<'a> {
    #[serde(borrow)]
    country: Raw<'a>,
    #[serde(borrow)]
    region: Raw<'a>,
    #[serde(borrow)]
    city: Raw<'a>,
    #[serde(borrow)]
    latitude: Raw<'a>,
    #[serde(borrow)]
    longitude: Raw<'a>,
}

/// `source.*`, `client.*`, `os.*`, `user_agent.*`: where the event came from, from the
/// event's `client`, `session` and `location` (the session's address wins over the client's).
fn source<'a>(out: &mut Ecs<'_, 'a>, rec: &Fields<'a>) {
    if let Some(c) = rec.object::<Client>("client") {
        out.source.ip = c.ip_address;
        out.client.ip = c.ip_address;
        out.os = NameVersion {
            name: c.os_name,
            version: c.os_version,
        };
        out.user_agent = NameVersion {
            name: c.app_name,
            version: c.app_version,
        };
    }
    if let Some(ip) = rec.object::<Session>("session").and_then(|s| s.ip) {
        out.source.ip = Some(ip);
    }
    if let Some(l) = rec.object::<Location>("location") {
        out.source.geo = Geo {
            city_name: l.city,
            country_name: l.country,
            // A geo point needs both coordinates; Elasticsearch refuses half of one.
            location: l
                .latitude
                .zip(l.longitude)
                .map(|(lat, lon)| LatLon { lat, lon }),
            region_name: l.region,
        };
    }
}

/// `related.*`: every IP address and email the normalizer found in the event.
fn related<'a>(rec: &Fields<'a>) -> Related<'a> {
    let mut ip: Vec<&RawValue> = rec
        .get("p_any_ip_addresses")
        .filter(|v| v.get().starts_with('['))
        .and_then(|v| serde_json::from_str(v.get()).ok())
        .unwrap_or_default();
    ip.dedup_by(|a, b| a.get() == b.get());
    Related {
        ip,
        user: rec.get("p_any_emails"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn render(feed: Feed, line: &[u8]) -> Vec<u8> {
        let t = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        ecs(line, feed, t).expect("renders")
    }

    fn record(feed: Feed, json: Value) -> Value {
        let line = serde_json::to_vec(&json).unwrap();
        serde_json::from_slice(&render(feed, &line)).expect("ECS output is JSON")
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

    /// 1Password's event is kept as it came, key order and nested values untouched, less the
    /// `uuid` (now `event.id`) and the normalizer's `p_*` fields.
    #[test]
    fn the_original_event_is_kept_as_it_came() {
        let line = br#"{"uuid":"A","zeta":1,"alpha":{"y":[1,2],"x":"\u00e9"},"note":null,"p_log_type":"OnePassword.AuditEvent","p_row_id":"r"}"#;
        let out = render(Feed::AuditEvents, line);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.contains(
                r#""onepassword":{"zeta":1,"alpha":{"y":[1,2],"x":"\u00e9"},"note":null}"#
            ),
            "{text}"
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["event"]["id"], "A");
        assert_eq!(v["oprelay"]["row_id"], "r");
    }

    /// Nulls map to nothing, a half geo point is left out (Elasticsearch refuses one), and a
    /// key with escapes still counts.
    #[test]
    fn nulls_and_half_values_are_left_out() {
        let out = record(
            Feed::SignInAttempts,
            json!({
                "uuid": null,
                "category": null,
                "client": {"ip_address": null, "os_name": "Linux"},
                "location": {"latitude": 1.5, "longitude": null, "city": "Oslo"},
                "target_user": "not an object",
            }),
        );
        assert!(out["event"].get("id").is_none() && out["event"].get("action").is_none());
        assert_eq!(out["event"]["outcome"], "unknown");
        assert!(out.get("client").is_none(), "{out}");
        assert_eq!(out["os"], json!({"name": "Linux"}));
        assert_eq!(out["source"], json!({"geo": {"city_name": "Oslo"}}));
        assert!(out.get("user").is_none() && out.get("related").is_none());
        let escaped = render(
            Feed::ItemUsages,
            br#"{"uuid":"U","\u0061ction":"reveal","p_log_type":"x"}"#,
        );
        let v: Value = serde_json::from_slice(&escaped).unwrap();
        assert_eq!(v["event"]["action"], "reveal");
    }

    #[test]
    fn what_is_not_a_record_is_an_error() {
        let t = OffsetDateTime::from_unix_timestamp(0).unwrap();
        for bad in [&b"[1,2]"[..], b"{\"a\":", b"nonsense"] {
            assert!(ecs(bad, Feed::AuditEvents, t).is_err(), "{bad:?}");
        }
    }
}
