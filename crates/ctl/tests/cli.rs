//! The `oprelay` binary against a real nats-server: lookups import (every format, all or
//! nothing), list, get; dead letters list, show, replay.

use std::path::Path;
use std::process::{Command, Output};

use oprelay_bus::{Bus, JsonKv, NatsSettings, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{LookupRow, LookupSource};
use oprelay_testkit::{binary, NatsServer};

fn oprelay(nats: &NatsServer, args: &[&str]) -> Output {
    Command::new(binary("oprelay"))
        .args(args)
        .env("OPRELAY_NATS__URL", nats.url())
        .env_remove("OPRELAY_CONFIG")
        .output()
        .expect("oprelay runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

async fn bus(nats: &NatsServer) -> Bus {
    Bus::connect(&NatsSettings {
        url: nats.url(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// `oprelay nats provision`, as an operator runs it once before starting the services.
fn provision(nats: &NatsServer) {
    let out = oprelay(nats, &["nats", "provision"]);
    assert!(out.status.success(), "nats provision: {}", text(&out));
}

#[tokio::test]
async fn lookups_import_every_format_all_or_nothing() {
    let nats = NatsServer::start();
    provision(&nats);
    let dir = tempfile::tempdir().unwrap();
    let items = write(
        dir.path(),
        "items.json",
        r#"[{"id":"item1","title":"AWS root","vault":{"id":"vault1","name":"Prod"},"updated_at":"2026-01-01T00:00:00Z"}]"#,
    );
    let users = write(
        dir.path(),
        "users.json",
        r#"[{"id":"USER1","name":"Ada Lovelace","email":"ada@example.com","type":"MEMBER","state":"ACTIVE"}]"#,
    );
    let vaults = write(
        dir.path(),
        "vaults.json",
        r#"[{"id":"vault2","name":"Finance","content_version":4}]"#,
    );
    let groups = write(
        dir.path(),
        "groups.json",
        r#"[{"id":"group1","name":"Owners","description":"","state":"ACTIVE"}]"#,
    );
    let csv = write(
        dir.path(),
        "items.csv",
        "uuid,title,updatedAt\nitem2,GitHub,2022-02-14 17:44:50\n",
    );
    let jsonl = write(
        dir.path(),
        "items.jsonl",
        "{\"uuid\":\"item3\",\"title\":\"VPN\"}\n",
    );
    let out = oprelay(
        &nats,
        &[
            "lookups", "import", &items, &users, &vaults, &groups, &csv, &jsonl,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    assert!(
        report.contains("op item list JSON — 1 item, 1 vault"),
        "{report}"
    );
    assert!(
        report.contains("imported: 3 items, 2 vaults, 1 user, 1 group"),
        "{report}"
    );

    let kv = JsonKv::open(&bus(&nats).await, names::BUCKET_LOOKUPS)
        .await
        .unwrap();
    let ada = kv
        .get::<LookupRow>("user.USER1")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(
        (ada.title.as_str(), ada.email.as_deref(), ada.source),
        (
            "Ada Lovelace",
            Some("ada@example.com"),
            LookupSource::Imported
        )
    );
    assert_eq!(
        kv.get::<LookupRow>("vault.vault1")
            .await
            .unwrap()
            .unwrap()
            .value
            .title,
        "Prod"
    );
    assert_eq!(
        kv.get::<LookupRow>("item.item2")
            .await
            .unwrap()
            .unwrap()
            .value
            .updated_at
            .as_deref(),
        Some("2022-02-14 17:44:50")
    );

    // A bad second file: nothing from either file is written.
    let fresh = write(
        dir.path(),
        "fresh.jsonl",
        "{\"uuid\":\"item9\",\"title\":\"New\"}\n",
    );
    let bad = write(
        dir.path(),
        "bad.json",
        r#"[{"id":"x","title":"ok"},{"id":"y"}]"#,
    );
    let out = oprelay(&nats, &["lookups", "import", &fresh, &bad]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("bad.json: nothing imported: element 1: `title` is missing"),
        "{}",
        text(&out)
    );
    assert!(
        kv.get::<LookupRow>("item.item9").await.unwrap().is_none(),
        "the good file was not written either"
    );

    let out = oprelay(&nats, &["lookups", "get", "USER1"]);
    assert!(
        out.status.success() && text(&out).contains("Ada Lovelace"),
        "{}",
        text(&out)
    );
    let out = oprelay(&nats, &["lookups", "get", "NOPE"]);
    assert_eq!(out.status.code(), Some(1));
    let out = oprelay(&nats, &["lookups", "list", "--kind", "item"]);
    assert!(
        text(&out).contains("3 row(s)") && text(&out).contains("GitHub"),
        "{}",
        text(&out)
    );
    let out = oprelay(&nats, &["lookups", "import", "--dry-run", &fresh]);
    assert!(text(&out).contains("dry run"));
    assert!(kv.get::<LookupRow>("item.item9").await.unwrap().is_none());
}

#[tokio::test]
async fn dead_letters_list_show_replay() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    bus.provision(&Default::default()).await.unwrap();
    let dlq = |body: &str, id: &str| {
        Outgoing::new("op.dlq.normalize.acme.audit_events", id, body.to_owned())
            .header(header::STAGE, "normalize")
            .header(
                header::ERROR,
                "timestamp `yesterday` is not an RFC 3339 time",
            )
            .header(header::ACCOUNT, "acme")
            .header(header::FEED, "audit_events")
    };
    bus.publish(dlq(r#"{"uuid":"A1","timestamp":"yesterday"}"#, "d1"))
        .await
        .unwrap();
    bus.publish(dlq(r#"{"cursor":"c","has_more":false,"items":[]}"#, "d2"))
        .await
        .unwrap();

    let out = oprelay(&nats, &["dlq", "list"]);
    assert!(
        text(&out).contains("2 dead letter(s)") && text(&out).contains("yesterday"),
        "{}",
        text(&out)
    );
    let out = oprelay(&nats, &["dlq", "show", "1"]);
    assert!(
        text(&out).contains("Oprelay-Error: timestamp `yesterday`")
            && text(&out).contains("\"uuid\":\"A1\""),
        "{}",
        text(&out)
    );

    let out = oprelay(&nats, &["dlq", "replay", "--all"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 dead letter(s) replayed"));
    let mut raw = bus.jetstream().get_stream(names::STREAM_RAW).await.unwrap();
    assert_eq!(raw.info().await.unwrap().state.messages, 2);
    let record = raw.get_raw_message(1).await.unwrap();
    assert_eq!(record.subject.as_str(), "op.raw.acme.audit_events");
    let page: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
    assert_eq!(
        page["items"][0]["uuid"], "A1",
        "a record is replayed as a one-item page"
    );
    let as_page: serde_json::Value =
        serde_json::from_slice(&raw.get_raw_message(2).await.unwrap().payload).unwrap();
    assert_eq!(as_page["cursor"], "c", "a page is replayed as it was");
    let out = oprelay(&nats, &["dlq", "list"]);
    assert!(
        text(&out).contains("0 dead letter(s)"),
        "replayed letters leave the DLQ: {}",
        text(&out)
    );
}

#[tokio::test]
async fn status_shows_feeds_sinks_and_open_alarms() {
    use oprelay_events::{CursorState, FeedStatus};
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    bus.provision(&Default::default()).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    let cursors = JsonKv::open(&bus, names::BUCKET_CURSORS).await.unwrap();
    cursors
        .put(
            "acme.item_usages",
            &CursorState {
                cursor: "c".into(),
                start_time: None,
                updated_at: now,
                pages: 2,
                events: 7,
            },
        )
        .await
        .unwrap();
    let status = JsonKv::open(&bus, names::BUCKET_STATUS).await.unwrap();
    status
        .put(
            "fetch.acme.item_usages",
            &FeedStatus {
                last_poll_at: Some(now),
                last_success_at: Some(now),
                last_event_at: Some(now),
                consecutive_failures: 3,
                last_error: Some("rate limited by the Events API (429)".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    bus.provision(&oprelay_bus::Topology {
        consumers: vec![oprelay_bus::ConsumerSpec {
            stream: names::STREAM_EVENTS.into(),
            durable: "sink-splunk".into(),
            filters: Vec::new(),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    for (i, n) in [3u32, 4].into_iter().enumerate() {
        bus.publish(
            Outgoing::new("op.events.acme.item_usages", format!("e{i}"), "{}\n")
                .header(header::COUNT, n),
        )
        .await
        .unwrap();
    }
    // An alarm record as healthwatch writes it: the published alarm plus its bookkeeping.
    let alarm = oprelay_events::Alarm {
        id: "a1".into(),
        kind: oprelay_events::AlarmKind::Dropoff,
        state: oprelay_events::AlarmState::Alarm,
        account: "acme".into(),
        feed: Some(oprelay_events::Feed::AuditEvents),
        since: now,
        last_event_at: None,
        message: "acme/audit_events: no events for 25 h".into(),
        runbook: "check the token".into(),
    };
    let mut record = serde_json::to_value(&alarm).unwrap();
    record["watching_since"] = serde_json::json!(oprelay_events::format_rfc3339_nanos(now));
    let health = JsonKv::open(&bus, names::BUCKET_HEALTH).await.unwrap();
    health
        .put("dropoff.acme.audit_events", &record)
        .await
        .unwrap();

    let out = oprelay(&nats, &["status"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let row = t
        .lines()
        .find(|l| l.starts_with("acme.item_usages"))
        .expect("feed row");
    assert!(
        row.contains(" 7 ") && row.contains(" 3 ") && row.contains("429"),
        "events in the last hour, failures, error: {row}"
    );
    let sink = t
        .lines()
        .find(|l| l.starts_with("splunk"))
        .expect("sink row");
    assert!(
        sink.split_whitespace().nth(1) == Some("2"),
        "two batches waiting: {sink}"
    );
    let alarm_row = t
        .lines()
        .find(|l| l.starts_with("acme.audit_events"))
        .expect("alarm row");
    assert!(
        alarm_row.contains("dropoff")
            && alarm_row.contains("acme/audit_events: no events for 25 h"),
        "{t}"
    );

    // The same, for scripts.
    let out = oprelay(&nats, &["status", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let feed = &report["feeds"][0];
    assert_eq!(feed["feed"], "acme.item_usages");
    assert_eq!(feed["events_last_hour"], 7);
    assert_eq!(feed["consecutive_failures"], 3);
    assert_eq!(report["sinks"][0]["sink"], "splunk");
    assert_eq!(report["sinks"][0]["backlog"], 2);
    let alarm_back: oprelay_events::Alarm =
        serde_json::from_value(report["open_alarms"][0].clone()).expect("a typed alarm");
    assert_eq!(alarm_back, alarm);
}

/// `oprelay cursor show|reset` move one feed and nothing else; `--output json` is what the
/// table shows.
#[tokio::test]
async fn cursor_show_and_reset() {
    use oprelay_events::CursorState;
    let nats = NatsServer::start();
    provision(&nats);
    let bus = bus(&nats).await;
    let cursors = JsonKv::open(&bus, names::BUCKET_CURSORS).await.unwrap();
    let show = |feed: &str| {
        let out = oprelay(
            &nats,
            &[
                "cursor",
                "show",
                "--account",
                "acme",
                "--feed",
                feed,
                "-o",
                "json",
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("cursor JSON")
    };
    assert_eq!(show("item_usages")["cursor"], serde_json::Value::Null);
    let now = time::OffsetDateTime::now_utc();
    for feed in ["item_usages", "audit_events"] {
        let state = CursorState {
            cursor: format!("api-cursor-{feed}"),
            start_time: None,
            updated_at: now,
            pages: 9,
            events: 900,
        };
        cursors.put(&format!("acme.{feed}"), &state).await.unwrap();
    }
    let shown = show("item_usages");
    assert_eq!(shown["cursor"]["cursor"], "api-cursor-item_usages");
    assert_eq!(shown["cursor"]["events"], 900);
    let table = oprelay(
        &nats,
        &[
            "cursor",
            "show",
            "--account",
            "acme",
            "--feed",
            "item_usages",
        ],
    );
    assert!(
        text(&table).contains("cursor api-cursor-item_usages"),
        "{}",
        text(&table)
    );

    let out = oprelay(
        &nats,
        &[
            "cursor",
            "reset",
            "--account",
            "acme",
            "--feed",
            "item_usages",
            "--to",
            "2026-11-01T00:00:00Z",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let moved = show("item_usages");
    assert_eq!(moved["cursor"]["cursor"], "");
    assert_eq!(moved["cursor"]["start_time"], "2026-11-01T00:00:00Z");
    assert!(moved["revision"].as_u64() > shown["revision"].as_u64());
    assert_eq!(
        show("audit_events")["cursor"]["cursor"],
        "api-cursor-audit_events",
        "the other feed keeps its cursor"
    );

    let out = oprelay(
        &nats,
        &[
            "cursor",
            "reset",
            "--account",
            "acme",
            "--feed",
            "audit_events",
            "--to-start",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(show("audit_events")["cursor"], serde_json::Value::Null);

    for bad in [
        vec!["--to", "2999-01-01T00:00:00Z"],
        vec!["--to", "yesterday"],
        vec![],
    ] {
        let mut args = vec![
            "cursor",
            "reset",
            "--account",
            "acme",
            "--feed",
            "signin_attempts",
        ];
        args.extend(bad.iter());
        let out = oprelay(&nats, &args);
        assert!(!out.status.success(), "{bad:?}: {}", text(&out));
    }
}

/// Every read command has `--output json`, and completions come from the same definitions.
#[tokio::test]
async fn read_commands_print_json_and_completions_are_generated() {
    let nats = NatsServer::start();
    provision(&nats);
    let bus = bus(&nats).await;
    bus.publish(
        Outgoing::new(
            "op.dlq.normalize.acme.audit_events",
            "d1",
            r#"{"uuid":"A1","timestamp":"yesterday"}"#,
        )
        .header(header::STAGE, "normalize")
        .header(header::ACCOUNT, "acme")
        .header(header::FEED, "audit_events")
        .header(header::ERROR, "bad timestamp"),
    )
    .await
    .unwrap();
    let json = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = oprelay(&nats, &all);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
    };
    let letters = json(&["dlq", "list"]);
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters}");
    assert_eq!(letters[0]["stage"], "normalize");
    assert_eq!(letters[0]["error"], "bad timestamp");
    assert_eq!(letters[0]["sink"], serde_json::Value::Null);
    let seq = letters[0]["seq"].as_u64().unwrap().to_string();
    let letter = json(&["dlq", "show", &seq]);
    assert_eq!(letter["body"]["uuid"], "A1", "the body as JSON: {letter}");
    assert_eq!(letter["headers"]["Oprelay-Error"][0], "bad timestamp");
    assert_eq!(json(&["lookups", "list"]), serde_json::json!([]));
    let out = oprelay(&nats, &["lookups", "get", "nobody", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );

    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(binary("oprelay"))
            .args(["completions", shell])
            .env("OPRELAY_CONFIG", "/nonexistent/oprelay.toml")
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("cursor") && script.contains("output"),
            "{shell}"
        );
    }
}

/// `oprelay normalize` without NATS: every shape another collector writes, the feed told from
/// each event, bad lines reported by number and kept in --rejects, exit code 3.
#[test]
fn normalize_reads_every_shape_and_reports_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/tests/fixtures");
    let first = |name: &str| {
        std::fs::read_to_string(fixtures.join(name))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned()
    };
    let signin = first("signin_attempts.jsonl");
    let usage = first("item_usages.jsonl");
    let audit = first("audit_events.jsonl");
    let quoted = |s: &str| serde_json::to_string(s).unwrap();
    let input = [
        signin.clone(),                                                    // 1: API item
        format!(r#"{{"cursor":"c","has_more":false,"items":[{usage}]}}"#), // 2: API page
        "{\"uuid\": broken".to_owned(),                                    // 3: bad
        format!(r#"{{"result":{{"_raw":{}}}}}"#, quoted(&audit)),          // 4: Splunk export
        r#"{"uuid":"X1","timestamp":"2024-01-01T00:00:00Z"}"#.to_owned(),  // 5: which feed?
        format!(r#"{{"event":{{"original":{}}}}}"#, quoted(&usage)),       // 6: event.original
        String::new(),                                                     // 7: blank
        r#"{"hello":"world"}"#.to_owned(),                                 // 8: not an event
    ]
    .join("\n");
    let file = write(dir.path(), "mixed.ndjson", &input);
    // 9: not even text.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(b"\n\xff\xfe{\"uuid\": 1}\n");
    std::fs::write(&file, bytes).unwrap();
    let rejects = dir.path().join("rejects.ndjson");
    let out = Command::new(binary("oprelay"))
        .args(["normalize", &file, "--account", "acme", "--rejects"])
        .arg(&rejects)
        .env_remove("OPRELAY_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = records
        .iter()
        .map(|r| r["p_log_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "OnePassword.SignInAttempt",
            "OnePassword.ItemUsage",
            "OnePassword.AuditEvent",
            "OnePassword.ItemUsage"
        ]
    );
    assert!(records.iter().all(|r| r["p_source_label"] == "acme"));
    for (line, why) in [
        (3, "not valid JSON"),
        (5, "cannot tell the feed"),
        (8, "not a 1Password event"),
        (9, "not valid UTF-8"),
    ] {
        assert!(
            stderr.contains(&format!("{file}:{line}: rejected: {why}")),
            "line {line}: {stderr}"
        );
    }
    assert!(
        stderr.contains("4 records") && stderr.contains("4 rejected"),
        "{stderr}"
    );
    let kept = std::fs::read(&rejects).unwrap();
    assert!(
        kept.ends_with(b"\xff\xfe{\"uuid\": 1}\n"),
        "the bytes as read"
    );
    let kept = String::from_utf8_lossy(&kept);
    assert_eq!(kept.lines().count(), 4, "{kept}");
    assert!(kept.contains("X1"));

    // --feed decides what the fields cannot; raw gives the original event back.
    let out = Command::new(binary("oprelay"))
        .args([
            "normalize",
            "--account",
            "acme",
            "--feed",
            "audit_events",
            "--format",
            "raw",
        ])
        .env_remove("OPRELAY_CONFIG")
        .stdin(
            std::fs::File::open(write(
                dir.path(),
                "one.ndjson",
                r#"{"uuid":"X1","timestamp":"2024-01-01T00:00:00Z"}"#,
            ))
            .unwrap(),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"uuid":"X1","timestamp":"2024-01-01T00:00:00Z"}"#
    );
}

/// Read-only commands read: run with a config that differs from production's (here: the
/// defaults), they neither create nor change a stream, a bucket or a consumer.
#[tokio::test]
async fn read_only_commands_change_nothing_on_the_bus() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let production = oprelay_bus::Topology {
        raw_max_age: std::time::Duration::from_secs(30 * 86_400),
        dlq_max_age: std::time::Duration::from_secs(90 * 86_400),
        ..Default::default()
    };
    bus.provision(&production).await.unwrap();
    let age = |stream: &'static str| {
        let bus = bus.clone();
        async move {
            let mut s = bus.jetstream().get_stream(stream).await.unwrap();
            s.info().await.unwrap().config.max_age
        }
    };
    let before = (age(names::STREAM_RAW).await, age(names::STREAM_DLQ).await);
    for args in [
        &["status"][..],
        &["dlq", "list"],
        &["lookups", "list"],
        &["lookups", "get", "nobody"],
    ] {
        let out = oprelay(&nats, args);
        // `lookups get` of an unknown uuid exits non-zero; it must still change nothing.
        assert!(
            out.status.code().is_some(),
            "{args:?} ran to an end: {}",
            text(&out)
        );
        assert_eq!(
            (age(names::STREAM_RAW).await, age(names::STREAM_DLQ).await),
            before,
            "`oprelay {}` changed the streams' retention",
            args.join(" ")
        );
    }
}

/// Provisioning is an explicit, reviewable step: a dry run lists the plan and changes nothing,
/// a run applies it, a shorter retention is held back (exit 2) until `--shrink-retention`,
/// and a writing command on an unprovisioned bus says what to run.
#[tokio::test]
async fn nats_provision_plans_applies_and_holds_back_shrinking() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "users.json",
        r#"[{"id":"U1","name":"Ada","email":"a@x","type":"MEMBER","state":"ACTIVE"}]"#,
    );
    let out = oprelay(&nats, &["lookups", "import", &file]);
    assert!(!out.status.success(), "import into nothing: {}", text(&out));
    assert!(
        text(&out).contains("oprelay nats provision"),
        "{}",
        text(&out)
    );

    let out = oprelay(&nats, &["nats", "provision", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan = text(&out);
    for line in [
        "would create stream OP_RAW",
        "would create bucket OP_CURSORS",
        "would create consumer normalizer on OP_RAW",
    ] {
        assert!(plan.contains(line), "{line} in:\n{plan}");
    }
    let bus = bus(&nats).await;
    assert!(
        bus.jetstream().get_stream(names::STREAM_RAW).await.is_err(),
        "dry run created"
    );

    provision(&nats);
    let out = oprelay(&nats, &["nats", "provision"]);
    assert!(
        text(&out).contains("stream OP_RAW is up to date"),
        "{}",
        text(&out)
    );
    let out = oprelay(&nats, &["lookups", "import", &file]);
    assert!(out.status.success(), "{}", text(&out));

    let shorter = |extra: &[&str]| {
        let mut cmd = Command::new(binary("oprelay"));
        cmd.args(["nats", "provision"])
            .args(extra)
            .env("OPRELAY_NATS__URL", nats.url())
            .env("OPRELAY_NATS__RAW_MAX_AGE", "1h")
            .env_remove("OPRELAY_CONFIG");
        cmd.output().unwrap()
    };
    let out = shorter(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--shrink-retention"), "{}", text(&out));
    let age = || async {
        let mut s = bus.jetstream().get_stream(names::STREAM_RAW).await.unwrap();
        s.info().await.unwrap().config.max_age
    };
    assert_eq!(age().await, std::time::Duration::from_secs(7 * 86_400));
    let out = shorter(&["--shrink-retention"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(age().await, std::time::Duration::from_secs(3600));
}

/// `oprelay config check` lists every problem of a config, not only the first, and names
/// each key.
#[test]
fn config_check_lists_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "oprelay.toml",
        r#"
[[accounts]]
name = "acme"
token_file = "/nonexistent/acme-token"
page_size = 5000

[[sinks]]
name = "syslog"
type = "syslog"
address = "siem.example.com:6514"
index = "nope"

[[sinks]]
name = "splunk"
type = "splunk_hec"
endpoint = "https://splunk.example.com:8088"
token_file = "/nonexistent/hec-token"
"#,
    );
    let out = Command::new(binary("oprelay"))
        .args(["--config", &config, "config", "check"])
        .env_remove("OPRELAY_CONFIG")
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for key in [
        "accounts[0].page_size",
        "sinks[0].index",
        "accounts[0].token_file",
        "sinks[1].token_file",
    ] {
        assert!(
            t.lines()
                .any(|l| l.starts_with("PROBLEM") && l.contains(key)),
            "{key}: {t}"
        );
    }
    assert!(t.contains("4 problem(s)"), "{t}");

    // A config that does not parse: deserializing stops at the first wrong type, which is
    // named with its key (everything else is listed once it parses).
    let config = write(
        dir.path(),
        "typos.toml",
        "[fetcher]\nrequests_per_minute = \"many\"\n\n[nats]\nurll = \"nats://x\"\n",
    );
    let out = Command::new(binary("oprelay"))
        .args(["--config", &config, "config", "check"])
        .env_remove("OPRELAY_CONFIG")
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("PROBLEM  fetcher.requests_per_minute: invalid type"),
        "{t}"
    );
}
