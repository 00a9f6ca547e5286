//! The subscriber contract (`docs/asyncapi.yaml` and `docs/schemas/`) holds on the wire: the
//! pipeline runs with a refused record, a rejected event, a replay and an alarm, so every kind
//! of message exists; then every message in every stream and every value a subscriber may read
//! from KV is checked — its subject against the channels and their parameters, its headers
//! against the message's header schema, its body (each line of NDJSON) against its JSON
//! Schema — and normalized records also against Panther's field types for their log type. The
//! first violations are reported with the subject and the path. The README's subject table is
//! checked against the channels too.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use jsonschema::Validator;
use regex::Regex;
use serde_json::{json, Value};

use oprelay_e2e::{k8s, text, Pipeline, Spec, ACCOUNT};
use oprelay_events::names;
use oprelay_testkit::eventually;

/// The AsyncAPI document as JSON.
fn asyncapi() -> Value {
    let yaml = std::fs::read(k8s::root().join("docs/asyncapi.yaml")).expect("docs/asyncapi.yaml");
    k8s::yaml_documents(&yaml)[0].clone()
}

/// Follows a `$ref`: into the document (`#/…`) or to a schema file (`./schemas/…`).
fn resolve(doc: &Value, v: &Value) -> Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) if r.starts_with("#/") => {
            resolve(doc, doc.pointer(&r[1..]).unwrap_or_else(|| panic!("{r}")))
        }
        Some(r) => {
            let path = k8s::root().join("docs").join(r.trim_start_matches("./"));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{r}: {e}"));
            serde_json::from_str(&text).unwrap()
        }
        None => v.clone(),
    }
}

fn validator(schema: &Value) -> Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("{schema}: {e}"))
}

/// One message kind of a channel, ready to check.
struct Message {
    name: String,
    headers: Option<Validator>,
    payload: Option<Validator>,
    ndjson: bool,
    schema: Option<String>,
    feed: Option<String>,
}

struct Channel {
    name: String,
    address: Regex,
    messages: Vec<Message>,
}

fn channels(doc: &Value) -> Vec<Channel> {
    let mut out = Vec::new();
    for (name, ch) in doc["channels"].as_object().unwrap() {
        let address = ch["address"].as_str().unwrap();
        // `{param}` becomes the parameter's enum or pattern; the rest is literal.
        let mut re = String::from("^");
        let mut rest = address;
        while let Some(open) = rest.find('{') {
            re.push_str(&regex::escape(&rest[..open]));
            let close = rest[open..].find('}').unwrap() + open;
            let param = resolve(doc, &ch["parameters"][&rest[open + 1..close]]);
            let alternatives = match (param.get("enum"), param.get("x-pattern")) {
                (Some(e), _) => e
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| regex::escape(v.as_str().unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"),
                (None, Some(p)) => p
                    .as_str()
                    .unwrap()
                    .trim_start_matches('^')
                    .trim_end_matches('$')
                    .to_owned(),
                _ => panic!(
                    "channel {name}: parameter {} has no enum or pattern",
                    &rest[open + 1..close]
                ),
            };
            re.push_str(&format!("({alternatives})"));
            rest = &rest[close + 1..];
        }
        re.push_str(&regex::escape(rest));
        re.push('$');
        let messages = ch["messages"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(m, v)| {
                let m_doc = resolve(doc, v);
                let headers = m_doc.get("headers").map(|h| validator(&resolve(doc, h)));
                let payload = m_doc
                    .get("payload")
                    .filter(|p| p.get("$ref").is_some())
                    .map(|p| validator(&resolve(doc, p)));
                Message {
                    name: format!("{name}/{m}"),
                    headers,
                    payload,
                    ndjson: m_doc["x-oprelay-framing"] == "ndjson",
                    schema: m_doc["x-oprelay-schema"].as_str().map(str::to_owned),
                    feed: m_doc["x-oprelay-feed"].as_str().map(str::to_owned),
                }
            })
            .collect();
        out.push(Channel {
            name: name.clone(),
            address: Regex::new(&re).unwrap(),
            messages,
        });
    }
    out
}

/// Panther's field types for each log type (`panther-1password.md` §1.1–1.3: the schema's
/// `string`, `bigint`, `timestamp` and `object` fields), as paths into a record.
fn panther_fields(log_type: &str) -> Vec<(&'static str, &'static str)> {
    let client = [
        ("client", "object"),
        ("client.app_name", "string"),
        ("client.app_version", "string"),
        ("client.platform_name", "string"),
        ("client.platform_version", "string"),
        ("client.os_name", "string"),
        ("client.os_version", "string"),
        ("client.ip_address", "string"),
    ];
    let mut fields = vec![("uuid", "string"), ("timestamp", "timestamp")];
    match log_type {
        "OnePassword.ItemUsage" => {
            fields.extend([
                ("used_version", "bigint"),
                ("vault_uuid", "string"),
                ("item_uuid", "string"),
                ("user", "object"),
                ("user.uuid", "string"),
                ("user.name", "string"),
                ("user.email", "string"),
            ]);
            fields.extend(client);
        }
        "OnePassword.SignInAttempt" => {
            fields.extend([
                ("session_uuid", "string"),
                ("category", "string"),
                ("type", "string"),
                ("country", "string"),
                ("details.value", "string"),
                ("target_user", "object"),
                ("target_user.uuid", "string"),
                ("target_user.name", "string"),
                ("target_user.email", "string"),
            ]);
            fields.extend(client);
        }
        "OnePassword.AuditEvent" => fields.extend([
            ("actor_uuid", "string"),
            ("actor_details", "object"),
            ("action", "string"),
            ("object_type", "string"),
            ("object_uuid", "string"),
            ("aux_id", "bigint"),
            ("aux_uuid", "string"),
            ("aux_info", "string"),
            ("session", "object"),
            ("session.uuid", "string"),
            ("session.login_time", "timestamp"),
            ("session.device_uuid", "string"),
            ("session.ip", "string"),
        ]),
        other => panic!("unknown log type {other}"),
    }
    fields.extend([
        ("p_log_type", "string"),
        ("p_row_id", "string"),
        ("p_event_time", "timestamp"),
        ("p_parse_time", "timestamp"),
        ("p_source_id", "string"),
        ("p_source_label", "string"),
    ]);
    fields
}

fn panther_type_fits(kind: &str, v: &Value) -> bool {
    match kind {
        "string" => v.is_string(),
        "bigint" => v.is_i64() || v.is_u64(),
        "object" => v.is_object(),
        "timestamp" => v
            .as_str()
            .is_some_and(|s| oprelay_events::Timestamp::parse(s).is_ok()),
        _ => false,
    }
}

/// Every way one message breaks the contract.
fn violations(
    channels: &[Channel],
    subject: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> Vec<String> {
    let matched: Vec<(&Channel, regex::Captures)> = channels
        .iter()
        .filter_map(|c| c.address.captures(subject).map(|cap| (c, cap)))
        .collect();
    let [(channel, _)] = matched.as_slice() else {
        let names: Vec<&str> = matched.iter().map(|(c, _)| c.name.as_str()).collect();
        return vec![format!(
            "{subject}: matches channels {names:?}, not exactly one"
        )];
    };
    let feed = headers.get(names::header::FEED).cloned();
    let message = channel
        .messages
        .iter()
        .find(|m| m.feed.is_none() || m.feed == feed)
        .expect("a message for the feed");
    let mut found = Vec::new();
    let header_json: Value = headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    if let Some(h) = &message.headers {
        for e in h.iter_errors(&header_json) {
            found.push(format!(
                "{subject} ({}): headers{}: {e}",
                message.name,
                e.instance_path()
            ));
        }
    }
    if let Some(want) = &message.schema {
        if headers.get(names::header::SCHEMA) != Some(want) && !subject.starts_with("$KV.") {
            found.push(format!(
                "{subject}: Oprelay-Schema {:?}, expected {want}",
                headers.get(names::header::SCHEMA)
            ));
        }
    }
    let Some(payload) = &message.payload else {
        return found;
    };
    let lines: Vec<&[u8]> = if message.ndjson {
        body.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect()
    } else {
        vec![body]
    };
    for (i, line) in lines.iter().enumerate() {
        let value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                found.push(format!("{subject}: line {i} is not JSON: {e}"));
                continue;
            }
        };
        for e in payload.iter_errors(&value) {
            found.push(format!(
                "{subject} ({}): line {i}{}: {e}",
                message.name,
                e.instance_path()
            ));
        }
        if message.ndjson && channel.name == "records" {
            let log_type = value["p_log_type"].as_str().unwrap_or_default();
            for (path, kind) in panther_fields(log_type) {
                let pointer = format!("/{}", path.replace('.', "/"));
                if let Some(v) = value.pointer(&pointer).filter(|v| !v.is_null()) {
                    if !panther_type_fits(kind, v) {
                        found.push(format!("{subject}: line {i}: {path} is {v}, Panther's {log_type} has it as {kind}"));
                    }
                }
            }
        }
    }
    found
}

fn headers_of(h: &oprelay_bus::async_nats::HeaderMap) -> HashMap<String, String> {
    h.iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.first()?.as_str().to_owned())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_on_the_bus_follows_the_contract() {
    let doc = asyncapi();
    let channels = channels(&doc);
    let mut p = Pipeline::start(Spec {
        backfill: 60,
        services: false,
        ..Spec::default()
    })
    .await;
    // A record Elasticsearch refuses: a forward dead letter, then a dlq_growing alarm.
    let refused = p.expected_row_ids()[5].clone();
    p.es.lock().unwrap().mapping_errors.insert(refused.clone());
    for s in oprelay_e2e::SERVICES {
        p.start_service(s).await;
    }
    // An event the normalizer rejects: a normalize dead letter.
    let bad = p.path("bad.ndjson");
    std::fs::write(
        &bad,
        "{\"uuid\":\"BAD00000000000000000000001\",\"timestamp\":\"yesterday\"}\n",
    )
    .unwrap();
    let out = p.oprelay(&[
        "ingest",
        bad.to_str().unwrap(),
        "--account",
        ACCOUNT,
        "--feed",
        "audit_events",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let expected = p.expected_row_ids().len();
    eventually(
        Duration::from_secs(90),
        "the records, both dead letters and an alarm",
        || async {
            let docs = p.es.lock().unwrap().docs.len();
            let letters = p.stream_messages(names::STREAM_DLQ).await.len();
            let alarms = p.stream_messages(names::STREAM_ALARMS).await.len();
            (docs == expected - 1 && letters >= 2 && alarms >= 1).then_some(())
        },
    )
    .await;
    // The mapping is fixed; the refused record is replayed to its sink.
    p.es.lock().unwrap().mapping_errors.clear();
    let out = p.oprelay(&["dlq", "replay", "--all", "--stage", "forward", "--keep"]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(Duration::from_secs(60), "the replayed record", || async {
        (p.es.lock().unwrap().docs.len() == expected).then_some(())
    })
    .await;

    let mut checked: HashMap<String, usize> = HashMap::new();
    let mut found = Vec::new();
    for stream in [
        names::STREAM_RAW,
        names::STREAM_EVENTS,
        names::STREAM_DLQ,
        names::STREAM_ALARMS,
    ] {
        for m in p.stream_messages(stream).await {
            found.extend(violations(
                &channels,
                &m.subject,
                &headers_of(&m.headers),
                &m.payload,
            ));
            *checked.entry(stream.to_owned()).or_default() += 1;
        }
    }
    let bus = p.bus().await;
    for bucket in [
        names::BUCKET_STATUS,
        names::BUCKET_LOOKUPS,
        names::BUCKET_HEALTH,
    ] {
        let kv = bus.kv(bucket).await.unwrap();
        let keys: Vec<String> = futures::StreamExt::collect::<Vec<_>>(kv.keys().await.unwrap())
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        for key in keys {
            if bucket == names::BUCKET_STATUS && !key.starts_with("fetch.") {
                continue; // the forwarder's and healthwatch's own rows are not in the contract
            }
            let Some(value) = kv.get(&key).await.unwrap() else {
                continue;
            };
            let subject = format!("$KV.{bucket}.{key}");
            found.extend(violations(&channels, &subject, &HashMap::new(), &value));
            *checked.entry(bucket.to_owned()).or_default() += 1;
        }
    }
    for what in [
        names::STREAM_RAW,
        names::STREAM_EVENTS,
        names::STREAM_DLQ,
        names::STREAM_ALARMS,
        names::BUCKET_STATUS,
        names::BUCKET_LOOKUPS,
        names::BUCKET_HEALTH,
    ] {
        assert!(
            checked.get(what).is_some_and(|n| *n > 0),
            "nothing checked in {what}: {checked:?}"
        );
    }
    let subjects: BTreeSet<String> = p
        .stream_messages(names::STREAM_EVENTS)
        .await
        .iter()
        .map(|m| {
            m.subject
                .split('.')
                .next_back()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(subjects.len() >= 3, "records of every feed: {subjects:?}");
    found.truncate(20);
    assert!(
        found.is_empty(),
        "contract violations (first 20):\n{}",
        found.join("\n")
    );
}

#[test]
fn a_message_that_breaks_the_contract_is_reported_with_its_subject_and_path() {
    let channels = channels(&asyncapi());
    let headers: HashMap<String, String> = [
        ("Nats-Msg-Id", "x"),
        ("Oprelay-Account", "acme"),
        ("Oprelay-Feed", "item_usages"),
        ("Oprelay-Schema", "onepassword.itemusage.v1"),
        ("Oprelay-Count", "1"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let good = br#"{"uuid":"U1","timestamp":"2026-03-01T12:00:00Z","used_version":2,"p_log_type":"OnePassword.ItemUsage","p_row_id":"0123456789abcdef0123456789abcdef","p_event_time":"2026-03-01 12:00:00.000000000","p_parse_time":"2026-03-01 12:00:01.000000000","p_source_id":"s","p_source_label":"L","brand_new":{"x":1}}"#;
    assert_eq!(
        violations(&channels, "op.events.acme.item_usages", &headers, good),
        Vec::<String>::new()
    );
    let bad_time =
        String::from_utf8_lossy(good).replace("12:00:00.000000000", "2026-03-01T12:00:00Z");
    let found = violations(
        &channels,
        "op.events.acme.item_usages",
        &headers,
        bad_time.as_bytes(),
    );
    assert!(
        found
            .iter()
            .any(|f| f.contains("op.events.acme.item_usages") && f.contains("/p_event_time")),
        "{found:?}"
    );
    let panther =
        String::from_utf8_lossy(good).replace("\"used_version\":2", "\"used_version\":\"2\"");
    let found = violations(
        &channels,
        "op.events.acme.item_usages",
        &headers,
        panther.as_bytes(),
    );
    assert!(
        found.iter().any(|f| f.contains("used_version")),
        "{found:?}"
    );
    let mut no_trace = headers.clone();
    no_trace.remove("traceparent");
    assert!(!violations(&channels, "op.events.acme.item_usages", &no_trace, good).is_empty());
    assert!(!violations(&channels, "op.events.ACME.item_usages", &headers, good).is_empty());
    assert!(!violations(&channels, "op.somewhere.acme", &headers, good).is_empty());
}

#[test]
fn the_readme_subject_table_is_the_asyncapi_channels() {
    let doc = asyncapi();
    let documented: BTreeSet<String> = doc["channels"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["address"].as_str().unwrap().to_owned())
        .collect();
    let readme = std::fs::read_to_string(k8s::root().join("README.md")).unwrap();
    let section = readme
        .split("### NATS subjects you can subscribe to")
        .nth(1)
        .expect("the README's subject section");
    let table: BTreeSet<String> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|') || l.is_empty())
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .collect();
    assert_eq!(
        table, documented,
        "README table vs docs/asyncapi.yaml channels"
    );
}
