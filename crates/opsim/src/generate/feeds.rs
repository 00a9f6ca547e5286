//! One event of each feed, as the v2 endpoints render it, drawn from the event's own RNG in a
//! fixed order (so the same seed and index always give the same bytes).

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Map, Value};
use time::{Duration, OffsetDateTime};

use oprelay_events::{
    format_rfc3339_nanos, AuditAction, AuditObjectType, ItemUsageAction, SignInType,
};

use super::directory::{DirUser, Directory};
use super::{client_json, ip, location_json, pick, random_uuid, user_json};

/// What every event of a feed starts from.
pub(super) struct Draw<'a> {
    pub rng: StdRng,
    pub dir: &'a Directory,
    pub uuid: String,
    pub user: &'a DirUser,
    pub arrival: OffsetDateTime,
}

impl<'a> Draw<'a> {
    /// The parts, for a function that builds one event from them.
    fn into_parts(self) -> (StdRng, &'a Directory, String, &'a DirUser, OffsetDateTime) {
        (self.rng, self.dir, self.uuid, self.user, self.arrival)
    }
}

/// The event with a `location`, when the client's address has one.
fn with_location(mut ev: Value, rng: &mut StdRng) -> Value {
    if let Some(loc) = location_json(rng) {
        ev["location"] = loc;
    }
    ev
}

/// A sign-in attempt: mostly successes, the failures in roughly the proportions real accounts
/// see, with firewall details where the category has them.
pub(super) fn sign_in(d: Draw<'_>) -> Value {
    let (mut rng, dir, uuid, user, arrival) = d.into_parts();
    let account = dir.account_uuid.as_str();
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
    let ev = json!({
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
    with_location(ev, &mut rng)
}

/// An item usage; a few arrive hours after they happened, as when a client syncs late.
pub(super) fn item_usage(d: Draw<'_>) -> Value {
    let (mut rng, dir, uuid, user, arrival) = d.into_parts();
    let account = dir.account_uuid.as_str();
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
    let ev = json!({
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
    with_location(ev, &mut rng)
}

/// An audit event on a user, vault, item, group or other object, sometimes with an auxiliary
/// member.
pub(super) fn audit_event(d: Draw<'_>) -> Value {
    let (mut rng, dir, uuid, user, arrival) = d.into_parts();
    let account = dir.account_uuid.as_str();
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
