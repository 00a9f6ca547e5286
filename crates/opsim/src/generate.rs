//! Deterministic, realistic events.
//!
//! Event `i` of a feed is a pure function of the seed, the feed, `i` and its arrival time, so the
//! simulator stores no events: a backfill of ten million costs nothing until it is paged through,
//! and the same seed always serves the same stream (tests can recompute what they should get).

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;
use serde_json::{json, Map, Value};
use time::{Duration, OffsetDateTime};

use oprelay_events::{
    format_rfc3339_nanos, AuditAction, AuditObjectType, Feed, ItemUsageAction, SignInType,
};

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A 26-character base-32 id, the shape of every 1Password UUID.
pub fn random_uuid(rng: &mut impl RngCore) -> String {
    (0..26)
        .map(|_| BASE32[(rng.next_u32() % 32) as usize] as char)
        .collect()
}

/// SplitMix64: turns (seed, feed, index) into independent per-event RNG seeds.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn rng_for(seed: u64, salt: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(seed ^ salt).wrapping_add(index)))
}

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Alan",
    "Radia",
    "Tim",
    "Hedy",
    "Whitfield",
    "Shafi",
    "Bjarne",
    "Zoë",
    "José",
    "Søren",
    "Anaïs",
    "Jack",
    "Mei",
    "Aarav",
    "Fatima",
    "Olusegun",
    "Yuki",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Turing",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "Diffie",
    "Goldwasser",
    "Stroustrup",
    "Núñez",
    "Kierkegaard",
    "O'Neill",
    "Chen",
    "Sharma",
    "Haddad",
    "Obasanjo",
    "Tanaka",
];
const DOMAINS: &[&str] = &["example.com", "acme.example", "corp.example.org"];
const ITEM_WORDS: &[&str] = &[
    "AWS root",
    "GitHub",
    "Prod database",
    "Stripe",
    "Okta admin",
    "VPN",
    "Wi-Fi",
    "Slack",
    "Datadog",
    "Break-glass",
    "Payroll",
    "Signing key",
    "Jira",
    "Google Workspace",
    "SSH bastion",
];
const VAULT_WORDS: &[&str] = &[
    "Engineering",
    "Finance",
    "Private",
    "Shared",
    "Infrastructure",
    "Security",
    "Marketing",
    "Executives",
    "Support",
    "Legal",
];
const GROUP_WORDS: &[&str] = &[
    "Owners",
    "Administrators",
    "Team Members",
    "Recovery",
    "Security",
    "Engineering",
];

/// (country, region, city, latitude, longitude)
const LOCATIONS: &[(&str, &str, &str, f64, f64)] = &[
    ("Canada", "Ontario", "Toronto", 43.64, -79.433),
    (
        "United States",
        "California",
        "San Francisco",
        37.7749,
        -122.4194,
    ),
    ("Germany", "Berlin", "Berlin", 52.52, 13.405),
    ("Japan", "Tokyo", "Tokyo", 35.6762, 139.6503),
    ("Brazil", "São Paulo", "São Paulo", -23.5505, -46.6333),
    ("India", "Karnataka", "Bengaluru", 12.9716, 77.5946),
    ("Israel", "Tel Aviv", "Tel Aviv", 32.0853, 34.7818),
    ("France", "Île-de-France", "Paris", 48.8566, 2.3522),
];

/// (app_name, app_version, platform_name, platform_version, os_name, os_version)
const CLIENTS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "1Password Browser Extension",
        "20195",
        "Chrome",
        "131.0.6778.86",
        "MacOSX",
        "14.6.1",
    ),
    (
        "1Password Browser Extension",
        "20195",
        "Firefox extension",
        "133.0",
        "Windows",
        "10.0.22631",
    ),
    (
        "1Password for Mac",
        "81004041",
        "Apple Inc.",
        "MacBookPro18,3",
        "MacOSX",
        "15.1",
    ),
    (
        "1Password for Windows",
        "81004041",
        "Dell Inc.",
        "XPS 13 9310",
        "Windows",
        "11",
    ),
    (
        "1Password for iOS",
        "81004041",
        "Apple Inc.",
        "iPhone15,2",
        "iOS",
        "18.1",
    ),
    (
        "1Password for Android",
        "81004041",
        "Google",
        "Pixel 8",
        "Android",
        "15",
    ),
    (
        "1Password CLI",
        "2300101",
        "1Password CLI",
        "arm64",
        "linux",
        "6.8.0",
    ),
    (
        "1Password for Linux",
        "81004041",
        "LENOVO",
        "ThinkPad X1",
        "Linux",
        "6.8.0",
    ),
    (
        "1Password SCIM Bridge",
        "2.9.5",
        "Go",
        "go1.23",
        "linux",
        "5.10",
    ),
];

#[derive(Clone, Debug, Serialize)]
pub struct DirUser {
    pub uuid: String,
    pub name: String,
    pub email: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DirVault {
    pub uuid: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DirItem {
    pub uuid: String,
    pub title: String,
    pub vault: usize,
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DirGroup {
    pub uuid: String,
    pub name: String,
}

/// The simulated account's people and objects. Events refer to them by UUID, and tests and the
/// demo export them as `op … list` output to build lookup tables.
#[derive(Clone, Debug, Serialize)]
pub struct Directory {
    pub account_uuid: String,
    pub users: Vec<DirUser>,
    pub vaults: Vec<DirVault>,
    pub items: Vec<DirItem>,
    pub groups: Vec<DirGroup>,
}

impl Directory {
    pub fn new(seed: u64) -> Self {
        let mut rng = rng_for(seed, 0xD1, 0);
        let account_uuid = random_uuid(&mut rng);
        let users = (0..120)
            .map(|i| {
                let first = FIRST[i % FIRST.len()];
                let last = LAST[(i / FIRST.len() + i) % LAST.len()];
                let domain = DOMAINS[i % DOMAINS.len()];
                let local: String = format!("{first}.{last}{}", i / (FIRST.len() * 3))
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .collect();
                DirUser {
                    uuid: random_uuid(&mut rng),
                    name: format!("{first} {last}"),
                    email: format!("{local}@{domain}"),
                }
            })
            .collect();
        let vaults: Vec<DirVault> = (0..24)
            .map(|i| DirVault {
                uuid: random_uuid(&mut rng).to_lowercase(),
                name: format!(
                    "{} {}",
                    VAULT_WORDS[i % VAULT_WORDS.len()],
                    i / VAULT_WORDS.len() + 1
                ),
            })
            .collect();
        let items = (0..600)
            .map(|i| DirItem {
                uuid: random_uuid(&mut rng).to_lowercase(),
                title: format!(
                    "{} #{}",
                    ITEM_WORDS[i % ITEM_WORDS.len()],
                    i / ITEM_WORDS.len() + 1
                ),
                vault: rng.random_range(0..vaults.len()),
                updated_at: format!("2026-0{}-1{}T08:00:00Z", 1 + i % 9, i % 10),
            })
            .collect();
        let groups = GROUP_WORDS
            .iter()
            .map(|g| DirGroup {
                uuid: random_uuid(&mut rng).to_lowercase(),
                name: (*g).to_owned(),
            })
            .collect();
        Directory {
            account_uuid,
            users,
            vaults,
            items,
            groups,
        }
    }

    /// `op item list --format json`.
    pub fn op_item_list(&self) -> Value {
        Value::Array(
            self.items
                .iter()
                .map(|it| {
                    let v = &self.vaults[it.vault];
                    json!({
                        "id": it.uuid, "title": it.title, "version": 3,
                        "vault": {"id": v.uuid, "name": v.name},
                        "category": "LOGIN", "last_edited_by": self.users[0].uuid,
                        "created_at": "2025-11-01T08:00:00Z", "updated_at": it.updated_at,
                    })
                })
                .collect(),
        )
    }

    /// `op vault list --format json`.
    pub fn op_vault_list(&self) -> Value {
        Value::Array(
            self.vaults
                .iter()
                .map(|v| json!({"id": v.uuid, "name": v.name, "content_version": 42, "created_at": "2025-11-01T08:00:00Z", "updated_at": "2026-01-01T08:00:00Z", "items": 25}))
                .collect(),
        )
    }

    /// `op user list --format json`.
    pub fn op_user_list(&self) -> Value {
        Value::Array(
            self.users
                .iter()
                .map(|u| json!({"id": u.uuid, "name": u.name, "email": u.email, "type": "MEMBER", "state": "ACTIVE"}))
                .collect(),
        )
    }

    /// `op group list --format json`.
    pub fn op_group_list(&self) -> Value {
        Value::Array(
            self.groups
                .iter()
                .map(|g| json!({"id": g.uuid, "name": g.name, "description": "", "state": "ACTIVE", "created_at": "2025-11-01T08:00:00Z"}))
                .collect(),
        )
    }
}

fn ip(rng: &mut StdRng) -> String {
    if rng.random_bool(0.2) {
        format!(
            "2001:db8:{:x}:{:x}::{:x}",
            rng.random::<u16>(),
            rng.random::<u16>(),
            rng.random_range(1u16..0xffff)
        )
    } else {
        // Public-looking unicast ranges.
        let first = *[13u8, 34, 52, 81, 89, 104, 151, 185, 203]
            .choose(rng)
            .unwrap_or(&13);
        format!(
            "{first}.{}.{}.{}",
            rng.random::<u8>(),
            rng.random::<u8>(),
            rng.random_range(1u8..255)
        )
    }
}

fn user_json(u: &DirUser, v2: bool, account_uuid: &str) -> Value {
    let mut m = json!({"uuid": u.uuid, "name": u.name, "email": u.email});
    if v2 {
        m["user_type"] = json!("user");
        m["user_account_uuid"] = json!(account_uuid);
    }
    m
}

fn client_json(rng: &mut StdRng) -> Value {
    let (app, ver, pn, pv, os, osv) = *CLIENTS.choose(rng).unwrap_or(&CLIENTS[0]);
    json!({"app_name": app, "app_version": ver, "platform_name": pn, "platform_version": pv,
           "os_name": os, "os_version": osv, "ip_address": ip(rng)})
}

fn location_json(rng: &mut StdRng) -> Option<Value> {
    if rng.random_bool(0.1) {
        return None;
    }
    let (country, region, city, lat, lon) = *LOCATIONS.choose(rng).unwrap_or(&LOCATIONS[0]);
    Some(
        json!({"country": country, "region": region, "city": city, "latitude": lat, "longitude": lon}),
    )
}

fn pick<'a>(rng: &mut StdRng, values: &'a [&'a str]) -> &'a str {
    values.choose(rng).copied().unwrap_or_default()
}

/// The v2 rendering of event `index` of `feed`, which arrived at `arrival`. The v1 endpoints
/// serve [`strip_v2_fields`] of it.
pub fn event(dir: &Directory, seed: u64, feed: Feed, index: u64, arrival: OffsetDateTime) -> Value {
    let mut rng = rng_for(seed, feed as u64 + 1, index);
    let uuid = random_uuid(&mut rng);
    let account = dir.account_uuid.as_str();
    let user = &dir.users[rng.random_range(0..dir.users.len())];
    match feed {
        Feed::SignInAttempts => {
            let roll: f64 = rng.random();
            let (category, kind) = if roll < 0.75 {
                ("success", pick(&mut rng, &["credentials_ok", "mfa_ok"]))
            } else if roll < 0.85 {
                ("credentials_failed", "password_secret_bad")
            } else if roll < 0.91 {
                // MFA, platform-secret and code failures.
                let i = rng.random_range(3..19);
                let i = if i >= 15 { i + 4 } else { i };
                ("mfa_failed", SignInType::KNOWN[i])
            } else if roll < 0.94 {
                let sso = &SignInType::KNOWN[15..19];
                ("sso_failed", pick(&mut rng, sso))
            } else if roll < 0.97 {
                let fw = &SignInType::KNOWN[25..30];
                ("firewall_failed", pick(&mut rng, fw))
            } else if roll < 0.98 {
                ("firewall_reported_success", "credentials_ok")
            } else {
                let old = &SignInType::KNOWN[30..];
                ("modern_version_failed", pick(&mut rng, old))
            };
            let details = if category == "firewall_failed" {
                json!({"value": pick(&mut rng, &["Europe", "Antarctica", "RU", "203.0.113.9"])})
            } else {
                Value::Null
            };
            let mut ev = json!({
                "uuid": uuid,
                "session_uuid": random_uuid(&mut rng),
                // Sign-ins carry whole seconds, like the API's.
                "timestamp": arrival.replace_nanosecond(0).map(format_rfc3339_nanos).map(|s| s.replace(".000000000", "")).unwrap_or_default(),
                "category": category,
                "type": kind,
                "country": pick(&mut rng, &["CA", "US", "DE", "JP", "BR", "IN", "IL", "FR"]),
                "details": details,
                "target_user": user_json(user, true, account),
                "client": client_json(&mut rng),
                "account_uuid": account,
            });
            if let Some(loc) = location_json(&mut rng) {
                ev["location"] = loc;
            }
            ev
        }
        Feed::ItemUsages => {
            let item = &dir.items[rng.random_range(0..dir.items.len())];
            // Item usage is reported when the client syncs: a few arrive hours late.
            let when = if rng.random_bool(0.05) {
                arrival - Duration::seconds(rng.random_range(600..86_400))
            } else {
                arrival
            };
            let millis = when
                .replace_nanosecond(when.millisecond() as u32 * 1_000_000)
                .unwrap_or(when);
            let ts = format_rfc3339_nanos(millis);
            let ts = format!("{}Z", &ts[..ts.len() - 7]);
            let mut ev = json!({
                "uuid": uuid,
                "timestamp": ts,
                "used_version": rng.random_range(1..40),
                "vault_uuid": dir.vaults[item.vault].uuid,
                "item_uuid": item.uuid,
                "action": pick(&mut rng, ItemUsageAction::KNOWN),
                "user": user_json(user, true, account),
                "client": client_json(&mut rng),
                "account_uuid": account,
            });
            if let Some(loc) = location_json(&mut rng) {
                ev["location"] = loc;
            }
            ev
        }
        Feed::AuditEvents => {
            let object_type = pick(&mut rng, AuditObjectType::KNOWN);
            let mut ev = Map::new();
            ev.insert("uuid".into(), json!(uuid));
            ev.insert("timestamp".into(), json!(format_rfc3339_nanos(arrival)));
            ev.insert("actor_uuid".into(), json!(user.uuid));
            ev.insert("actor_details".into(), user_json(user, true, account));
            ev.insert("actor_type".into(), json!("user"));
            ev.insert("actor_account_uuid".into(), json!(account));
            ev.insert("account_uuid".into(), json!(account));
            ev.insert("action".into(), json!(pick(&mut rng, AuditAction::KNOWN)));
            ev.insert("object_type".into(), json!(object_type));
            let object_uuid = match object_type {
                "user" => {
                    let target = &dir.users[rng.random_range(0..dir.users.len())];
                    ev.insert("object_details".into(), user_json(target, true, account));
                    target.uuid.clone()
                }
                "vault" => dir.vaults[rng.random_range(0..dir.vaults.len())]
                    .uuid
                    .clone(),
                "item" => dir.items[rng.random_range(0..dir.items.len())].uuid.clone(),
                "group" | "gm" => dir.groups[rng.random_range(0..dir.groups.len())]
                    .uuid
                    .clone(),
                _ => random_uuid(&mut rng),
            };
            ev.insert("object_uuid".into(), json!(object_uuid));
            if object_type == "gm" || rng.random_bool(0.1) {
                let member = &dir.users[rng.random_range(0..dir.users.len())];
                ev.insert("aux_id".into(), json!(rng.random_range(1..100_000i64)));
                ev.insert("aux_uuid".into(), json!(member.uuid));
                ev.insert("aux_details".into(), user_json(member, true, account));
                ev.insert("aux_info".into(), json!(pick(&mut rng, &["A", "M", "R"])));
            }
            let login = arrival - Duration::seconds(rng.random_range(60..28_800));
            ev.insert(
                "session".into(),
                json!({"uuid": random_uuid(&mut rng), "login_time": format_rfc3339_nanos(login),
                       "device_uuid": random_uuid(&mut rng).to_lowercase(), "ip": ip(&mut rng)}),
            );
            if let Some(loc) = location_json(&mut rng) {
                ev.insert("location".into(), loc);
            }
            Value::Object(ev)
        }
    }
}

/// The fields only the v2 endpoints return.
pub fn strip_v2_fields(event: &mut Value) {
    let Some(obj) = event.as_object_mut() else {
        return;
    };
    for key in ["account_uuid", "actor_type", "actor_account_uuid"] {
        obj.remove(key);
    }
    for user_key in [
        "target_user",
        "user",
        "actor_details",
        "object_details",
        "aux_details",
    ] {
        if let Some(Value::Object(u)) = obj.get_mut(user_key) {
            u.remove("user_type");
            u.remove("user_account_uuid");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oprelay_events::{AuditEvent, ItemUsage, SignInAttempt};

    #[test]
    fn events_are_deterministic_and_parse() {
        let dir = Directory::new(1);
        let t = OffsetDateTime::now_utc();
        for i in 0..300 {
            let a = event(&dir, 1, Feed::SignInAttempts, i, t);
            assert_eq!(a, event(&dir, 1, Feed::SignInAttempts, i, t));
            serde_json::from_value::<SignInAttempt>(a).expect("sign-in parses");
            serde_json::from_value::<ItemUsage>(event(&dir, 1, Feed::ItemUsages, i, t))
                .expect("item usage parses");
            let mut audit = event(&dir, 1, Feed::AuditEvents, i, t);
            serde_json::from_value::<AuditEvent>(audit.clone()).expect("audit parses");
            strip_v2_fields(&mut audit);
            assert!(audit.get("account_uuid").is_none());
        }
        assert_ne!(
            event(&dir, 1, Feed::ItemUsages, 0, t),
            event(&dir, 2, Feed::ItemUsages, 0, t)
        );
    }

    #[test]
    fn uuids_have_the_real_shape() {
        let mut rng = StdRng::seed_from_u64(3);
        let id = random_uuid(&mut rng);
        assert_eq!(id.len(), 26);
        assert!(id.bytes().all(|b| BASE32.contains(&b)));
    }
}
