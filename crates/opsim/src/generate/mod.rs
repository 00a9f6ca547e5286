//! Deterministic, realistic events.
//!
//! Event `i` of a feed is a pure function of the seed, the feed, `i` and its arrival time, so the
//! simulator stores no events: a backfill of ten million costs nothing until it is paged through,
//! and the same seed always serves the same stream (tests can recompute what they should get).

mod directory;
mod feeds;

pub use directory::{DirGroup, DirItem, DirUser, DirVault, Directory};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};
use time::OffsetDateTime;

use oprelay_events::Feed;

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
    let user = &dir.users[rng.random_range(0..dir.users.len())];
    let draw = feeds::Draw {
        rng,
        dir,
        uuid,
        user,
        arrival,
    };
    match feed {
        Feed::SignInAttempts => feeds::sign_in(draw),
        Feed::ItemUsages => feeds::item_usage(draw),
        Feed::AuditEvents => feeds::audit_event(draw),
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
