//! Property tests: any event 1Password could send, with any mix of absent, null and present
//! fields, unknown enum values and unknown keys at every level, survives parse → serialize.

use oprelay_events::{AuditEvent, ItemUsage, SignInAttempt};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Keys the typed model knows at some level; generated unknown keys avoid them.
const KNOWN: &[&str] = &[
    "uuid",
    "name",
    "email",
    "user_type",
    "user_account_uuid",
    "app_name",
    "app_version",
    "platform_name",
    "platform_version",
    "os_name",
    "os_version",
    "ip_address",
    "country",
    "region",
    "city",
    "latitude",
    "longitude",
    "login_time",
    "device_uuid",
    "ip",
    "value",
    "session_uuid",
    "timestamp",
    "category",
    "type",
    "details",
    "target_user",
    "client",
    "location",
    "account_uuid",
    "used_version",
    "vault_uuid",
    "item_uuid",
    "action",
    "user",
    "actor_uuid",
    "actor_details",
    "actor_type",
    "actor_account_uuid",
    "object_type",
    "object_uuid",
    "object_details",
    "aux_id",
    "aux_uuid",
    "aux_details",
    "aux_info",
    "session",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn json_any() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn unknown_keys() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("x_[a-z]{1,8}", json_any(), 0..3).prop_map(|m| {
        m.into_iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .collect()
    })
}

/// A timestamp with 0–9 fractional digits and `Z` or an offset.
fn timestamp() -> impl Strategy<Value = Value> {
    (
        1990i32..2100,
        1u8..=12,
        1u8..=28,
        0u8..24,
        0u8..60,
        0u8..60,
        0usize..=9,
        0u32..1_000_000_000,
        prop::option::of((-14i8..=14, 0u8..60)),
    )
        .prop_map(|(y, mo, d, h, mi, s, digits, nanos, offset)| {
            let mut t = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
            if digits > 0 {
                let frac = format!("{nanos:09}");
                t.push('.');
                t.push_str(&frac[..digits]);
            }
            match offset {
                None => t.push('Z'),
                Some((oh, om)) => {
                    let sign = if oh < 0 { '-' } else { '+' };
                    t.push_str(&format!("{sign}{:02}:{om:02}", oh.unsigned_abs()));
                }
            }
            Value::String(t)
        })
}

fn enum_value(known: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(known).prop_map(|s| Value::String(s.to_owned())),
        "[a-z_-]{1,12}".prop_map(Value::String),
    ]
}

fn string() -> impl Strategy<Value = Value> {
    ".{0,16}".prop_map(Value::String)
}

/// One optional field: absent (None), null, or a value.
type Slot = Option<Value>;

fn slot(value: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Slot> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        3 => value.prop_map(Some),
    ]
    .boxed()
}

fn object(fields: Vec<(&'static str, BoxedStrategy<Slot>)>) -> BoxedStrategy<Value> {
    let (names, strategies): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
    (strategies, unknown_keys())
        .prop_map(move |(values, mut extra)| {
            for (name, value) in names.iter().zip(values) {
                if let Some(v) = value {
                    extra.insert((*name).to_owned(), v);
                }
            }
            Value::Object(extra)
        })
        .boxed()
}

fn user() -> BoxedStrategy<Value> {
    object(vec![
        ("uuid", slot(string())),
        ("name", slot(string())),
        ("email", slot(string())),
        (
            "user_type",
            slot(enum_value(oprelay_events::UserType::KNOWN)),
        ),
        ("user_account_uuid", slot(string())),
    ])
}

fn client() -> BoxedStrategy<Value> {
    object(
        [
            "app_name",
            "app_version",
            "platform_name",
            "platform_version",
            "os_name",
            "os_version",
            "ip_address",
        ]
        .into_iter()
        .map(|k| (k, slot(string())))
        .collect(),
    )
}

fn location() -> BoxedStrategy<Value> {
    let coord = any::<f64>()
        .prop_filter("finite", |f| f.is_finite())
        .prop_map(Value::from);
    object(vec![
        ("country", slot(string())),
        ("region", slot(string())),
        ("city", slot(string())),
        ("latitude", slot(coord.clone())),
        ("longitude", slot(coord)),
    ])
}

fn sign_in() -> BoxedStrategy<Value> {
    object(vec![
        ("uuid", slot(string())),
        ("session_uuid", slot(string())),
        ("timestamp", slot(timestamp())),
        (
            "category",
            slot(enum_value(oprelay_events::SignInCategory::KNOWN)),
        ),
        ("type", slot(enum_value(oprelay_events::SignInType::KNOWN))),
        ("country", slot(string())),
        ("details", slot(object(vec![("value", slot(string()))]))),
        ("target_user", slot(user())),
        ("client", slot(client())),
        ("location", slot(location())),
        ("account_uuid", slot(string())),
    ])
}

fn item_usage() -> BoxedStrategy<Value> {
    object(vec![
        ("uuid", slot(string())),
        ("timestamp", slot(timestamp())),
        ("used_version", slot(any::<i64>().prop_map(Value::from))),
        ("vault_uuid", slot(string())),
        ("item_uuid", slot(string())),
        (
            "action",
            slot(enum_value(oprelay_events::ItemUsageAction::KNOWN)),
        ),
        ("user", slot(user())),
        ("client", slot(client())),
        ("location", slot(location())),
        ("account_uuid", slot(string())),
    ])
}

fn audit_event() -> BoxedStrategy<Value> {
    let session = object(vec![
        ("uuid", slot(string())),
        ("login_time", slot(timestamp())),
        ("device_uuid", slot(string())),
        ("ip", slot(string())),
    ]);
    object(vec![
        ("uuid", slot(string())),
        ("timestamp", slot(timestamp())),
        ("actor_uuid", slot(string())),
        ("actor_details", slot(user())),
        (
            "actor_type",
            slot(enum_value(oprelay_events::UserType::KNOWN)),
        ),
        ("actor_account_uuid", slot(string())),
        ("account_uuid", slot(string())),
        (
            "action",
            slot(enum_value(oprelay_events::AuditAction::KNOWN)),
        ),
        (
            "object_type",
            slot(enum_value(oprelay_events::AuditObjectType::KNOWN)),
        ),
        ("object_uuid", slot(string())),
        ("object_details", slot(user())),
        ("aux_id", slot(any::<i64>().prop_map(Value::from))),
        ("aux_uuid", slot(string())),
        ("aux_details", slot(user())),
        ("aux_info", slot(string())),
        ("session", slot(session)),
        ("location", slot(location())),
    ])
}

fn assert_lossless<T: serde::de::DeserializeOwned + serde::Serialize>(
    original: &Value,
) -> Result<(), TestCaseError> {
    let bytes = serde_json::to_vec(original).expect("serialize input");
    let typed: T = serde_json::from_slice(&bytes)
        .map_err(|e| TestCaseError::fail(format!("parse failed: {e}\n{original}")))?;
    let back: Value =
        serde_json::from_slice(&serde_json::to_vec(&typed).expect("serialize")).expect("reparse");
    prop_assert_eq!(&back, original);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sign_in_attempts_are_lossless(ev in sign_in()) {
        assert_lossless::<SignInAttempt>(&ev)?;
    }

    #[test]
    fn item_usages_are_lossless(ev in item_usage()) {
        assert_lossless::<ItemUsage>(&ev)?;
    }

    #[test]
    fn audit_events_are_lossless(ev in audit_event()) {
        assert_lossless::<AuditEvent>(&ev)?;
    }
}
