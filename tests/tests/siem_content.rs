//! What oprelay brings for the SIEM side: the Elasticsearch index templates the forwarder
//! installs (`manage_template = true`), checked by a receiver that applies their mappings as
//! Elasticsearch does, and the Splunk `props.conf` for the sourcetypes the HEC sink sets.

use std::time::Duration;

use oprelay_e2e::{k8s, Pipeline, Spec};
use oprelay_events::{names, Feed};
use oprelay_testkit::eventually;

/// Runs the backfill into Elasticsearch with the template for `format`, and checks that the
/// template was installed before the first document and that every document fit it.
async fn every_document_fits_the_template(extra: &str, template: &str, pattern: &str) {
    let p = Pipeline::start(Spec {
        elastic_extra: format!("manage_template = true\n{extra}"),
        ..Spec::default()
    })
    .await;
    let expected = p.expected_row_ids().len();
    eventually(
        Duration::from_secs(60),
        "every record at Elasticsearch",
        || async { (p.es.lock().unwrap().docs.len() >= expected).then_some(()) },
    )
    .await;
    {
        let es = p.es.lock().unwrap();
        let installed = es.templates.get(template).expect("the template installed");
        assert_eq!(installed["index_patterns"], serde_json::json!([pattern]));
        assert_eq!(installed["_meta"]["managed_by"], "oprelay");
        assert_eq!(es.docs.len(), expected);
        assert_eq!(
            es.template_checked, expected,
            "every document was checked against the template's mappings"
        );
    }
    assert!(
        p.stream_messages(names::STREAM_DLQ).await.is_empty(),
        "nothing refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panther_template_maps_every_record() {
    every_document_fits_the_template("", "oprelay-elastic", "oprelay-*").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ecs_template_maps_every_record() {
    every_document_fits_the_template(
        "format = \"ecs\"\nindex = \"sec-1password-{yyyy.MM}\"",
        "oprelay-elastic",
        "sec-1password-*",
    )
    .await;
}

/// `%Y-%m-%d %H:%M:%S.%9N` style strptime, the subset props.conf uses, against a value.
fn strptime_matches(format: &str, value: &str) -> bool {
    let mut rest = value;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            match rest.strip_prefix(c) {
                Some(r) => rest = r,
                None => return false,
            }
            continue;
        }
        let mut width = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(*d);
            chars.next();
        }
        let digits = match chars.next() {
            Some('Y') => 4,
            Some('m' | 'd' | 'H' | 'M' | 'S') => 2,
            Some('N') => width.parse().unwrap_or(3),
            _ => return false,
        };
        if rest.len() < digits || !rest[..digits].bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        rest = &rest[digits..];
    }
    rest.is_empty()
}

#[test]
fn splunk_props_cover_every_sourcetype_and_read_p_event_time() {
    let text = std::fs::read_to_string(k8s::root().join("deploy/siem/splunk/props.conf"))
        .expect("deploy/siem/splunk/props.conf");
    let mut stanzas: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_owned());
            stanzas.entry(name.to_owned()).or_default();
        } else {
            let (k, v) = line.split_once('=').expect("key = value");
            let stanza = current.clone().expect("a key inside a stanza");
            stanzas
                .get_mut(&stanza)
                .unwrap()
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    // A normalized record's p_event_time, as the normalizer writes it.
    let record =
        oprelay_events::format_panther(time::macros::datetime!(2026-03-01 12:00:00.25 UTC));
    for feed in Feed::ALL {
        // The HEC sink's default sourcetype.
        let name = format!("1password:{feed}");
        let keys = stanzas
            .get(&name)
            .unwrap_or_else(|| panic!("no [{name}] stanza"));
        let get = |k: &str| {
            keys.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("[{name}] has no {k}"))
        };
        assert_eq!(get("KV_MODE"), "json");
        assert_eq!(get("TIME_PREFIX"), r#""p_event_time"\s*:\s*""#);
        assert!(
            strptime_matches(get("TIME_FORMAT"), &record),
            "[{name}] TIME_FORMAT {} does not read {record}",
            get("TIME_FORMAT")
        );
    }
}
