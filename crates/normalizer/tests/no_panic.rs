//! Any input, no panic: arbitrary bytes, and arbitrary JSON in the shape of pages and events,
//! through the page parser and the normalizer. (`just fuzz` runs the coverage-guided version.)

use oprelay_events::Feed;
use oprelay_normalizer::lookup::LookupIndex;
use oprelay_normalizer::normalize::{normalize_page, Source};
use proptest::prelude::*;
use serde_json::Value;

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![
            "uuid",
            "timestamp",
            "2026-01-01T00:00:00Z",
            "1.1.1.1",
            "::1",
            "a@b",
            "p_x",
            "",
            "{\n}"
        ])
        .prop_map(|s| Value::String(s.into())),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "uuid",
                    "timestamp",
                    "client",
                    "ip_address",
                    "session",
                    "ip",
                    "user",
                    "email",
                    "name",
                    "item_uuid",
                    "object_uuid",
                    "object_type",
                    "p_log_type",
                    "items",
                    "cursor",
                    "has_more",
                    "x"
                ])
                .prop_map(str::to_owned),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check(bytes: &[u8]) {
    let source = Source::for_account("p", None, None);
    for feed in Feed::ALL {
        let page = normalize_page(
            bytes,
            feed,
            &source,
            &mut LookupIndex::new(),
            time::OffsetDateTime::UNIX_EPOCH,
        );
        for line in page.ndjson.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_slice(line).expect("every output line is JSON");
            assert!(v.is_object());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_pages(items in prop::collection::vec(json(), 0..6), cursor in json(), has_more in json()) {
        let page = serde_json::json!({"cursor": cursor, "has_more": has_more, "items": items});
        check(&serde_json::to_vec(&page).unwrap());
        let page = serde_json::json!({"cursor": "c", "has_more": false, "items": items});
        check(&serde_json::to_vec_pretty(&page).unwrap());
    }
}
