//! `oprelay normalize` on several threads writes what one thread would: the same records, in
//! input order, each enriched with what the events before it taught.

use std::io::Write;

use time::macros::datetime;

use super::*;

fn signin(n: usize, user: &str, name: &str) -> String {
    format!(
        r#"{{"uuid":"S{n}","timestamp":"2024-01-01T00:00:00Z","category":"success","type":"credentials_ok","target_user":{{"uuid":"{user}","name":"{name}","email":"{user}@example.com"}}}}"#
    )
}

fn audit(n: usize, actor: &str) -> String {
    format!(
        r#"{{"uuid":"A{n}","timestamp":"2024-01-01T00:00:01Z","actor_uuid":"{actor}","action":"suspend","object_type":"user","object_uuid":"O{n}"}}"#
    )
}

fn options(input: &std::path::Path, workers: usize, chunk_bytes: usize) -> Options {
    Options {
        files: vec![input.to_path_buf()],
        feed: None,
        source: Source::for_account("acme", None, None),
        account: "acme".into(),
        format: OutputFormat::Panther,
        rejects: Some(input.with_extension("rejects")),
        parse_time: datetime!(2024-06-01 12:00 UTC),
        workers,
        chunk_bytes,
    }
}

fn normalize_file(
    lines: &[String],
    workers: usize,
    chunk_bytes: usize,
) -> (String, Counts, String) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    let mut f = File::create(&input).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    drop(f);
    let opts = options(&input, workers, chunk_bytes);
    let mut out = Vec::new();
    let counts = normalize(&opts, &LookupIndex::new(), &mut out).unwrap();
    let rejects = std::fs::read_to_string(input.with_extension("rejects")).unwrap();
    (String::from_utf8(out).unwrap(), counts, rejects)
}

/// Each user is first named by a sign-in, then only by UUID in audit events: every audit event
/// after the sign-in must carry the name, however the chunks fall to the workers.
fn interleaved_learning() -> Vec<String> {
    let mut lines = Vec::new();
    for u in 0..40 {
        lines.push(audit(u * 10, &format!("U{u}")));
        lines.push(signin(u, &format!("U{u}"), &format!("Person {u}")));
        for k in 1..6 {
            lines.push(audit(u * 10 + k, &format!("U{u}")));
        }
    }
    lines
}

#[test]
fn many_workers_write_what_one_thread_writes() {
    let lines = interleaved_learning();
    let (one, one_counts, _) = normalize_file(&lines, 1, usize::MAX);
    assert_eq!(one_counts.redone, 0, "a single chunk is never redone");
    assert_eq!(one_counts.per_feed, [40, 0, 240]);
    // One value per chunk, three workers: chunks overtake each other and learn while others
    // are out, so some are redone; the output must not change.
    let (many, counts, _) = normalize_file(&lines, 3, 1);
    assert_eq!(counts.per_feed, one_counts.per_feed);
    assert_eq!(many, one, "the same bytes in the same order");

    // What that output is: the first audit event of each user comes before its sign-in and
    // knows no name; the five after it do.
    let records: Vec<serde_json::Value> = one
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, r) in records.iter().enumerate() {
        let uuid = r["uuid"].as_str().unwrap();
        let enriched = &r["p_enrichment"][oprelay_events::ENRICHMENT_TABLE]["actor_uuid"]["title"];
        let Some(n) = uuid.strip_prefix('A') else {
            continue;
        };
        let n: usize = n.parse().unwrap();
        if n.is_multiple_of(10) {
            assert!(
                enriched.is_null(),
                "record {i} ({uuid}) precedes its sign-in"
            );
        } else {
            assert_eq!(
                enriched,
                &format!("Person {}", n / 10),
                "record {i} ({uuid})"
            );
        }
    }
}

#[test]
fn records_and_rejects_keep_input_order() {
    let mut lines: Vec<String> = (0..300).map(|n| audit(n, "U")).collect();
    lines[7] = "not json".into();
    lines[150] =
        r#"{"uuid":"X","timestamp":"yesterday","actor_uuid":"U","object_type":"user"}"#.into();
    let (out, counts, rejects) = normalize_file(&lines, 2, 64);
    assert_eq!(counts.per_feed[2], 298);
    assert_eq!(counts.rejected, 2);
    let uuids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["uuid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: Vec<String> = (0..300)
        .filter(|n| *n != 7 && *n != 150)
        .map(|n| format!("A{n}"))
        .collect();
    assert_eq!(uuids, expected);
    assert_eq!(
        rejects.lines().collect::<Vec<_>>(),
        vec![lines[7].as_str(), lines[150].as_str()]
    );
}

#[test]
fn an_unreadable_input_is_an_error_after_the_ones_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.ndjson");
    std::fs::write(&input, audit(1, "U") + "\n").unwrap();
    let mut opts = options(&input, 2, 1);
    opts.files.push(dir.path().join("missing.ndjson"));
    let mut out = Vec::new();
    let err = normalize(&opts, &LookupIndex::new(), &mut out).unwrap_err();
    assert!(format!("{err:#}").contains("missing.ndjson"), "{err:#}");
    assert!(
        String::from_utf8(out).unwrap().contains("\"uuid\":\"A1\""),
        "the first file was written"
    );
}

fn chunk_of(seq: u64, line: &str) -> Chunk {
    Chunk {
        seq,
        input: "events.ndjson".into(),
        text: line.to_owned(),
        unreadable: Vec::new(),
        values: vec![chunks::ChunkValue {
            line: seq as usize + 1,
            text: Ok(0..line.len()),
        }],
    }
}

/// Two chunks normalized side by side against the same (empty) rows, the later one finished
/// first: it waits for its turn, and is normalized again because the earlier one taught the
/// name it needs.
#[test]
fn a_chunk_that_read_stale_rows_is_redone_at_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(&dir.path().join("unused"), 2, 1);
    let setup = Setup {
        contexts: Feed::ALL.map(|f| PageContext::new(f, &opts.source, opts.parse_time)),
        feed: None,
        format: OutputFormat::Panther,
        account: "acme".into(),
    };
    let imported = LookupIndex::new();
    let shared = Shared::default();
    let stale = shared.current();
    let normalize_alone = |chunk| {
        let below = [&imported, &*stale.rows];
        normalize_chunk(&setup, chunk, stale.version, &mut Layered::new(&below))
    };
    let first = normalize_alone(chunk_of(0, &signin(1, "U1", "Ann")));
    let second = normalize_alone(chunk_of(1, &audit(2, "U1")));
    assert!(
        !String::from_utf8_lossy(&second.records).contains("Ann"),
        "it could not know Ann"
    );

    let mut rejects = Rejects::create(None).unwrap();
    let mut out = Vec::new();
    let mut committer = Committer::new(&setup, &imported, &shared, &mut out, &mut rejects);
    assert_eq!(
        committer.take(second).unwrap(),
        0,
        "the second waits for the first"
    );
    assert_eq!(committer.pending(), 1);
    assert_eq!(committer.take(first).unwrap(), 2, "then both are written");
    assert_eq!(committer.counts.redone, 1);
    assert_eq!(shared.current().version, 1, "workers now read Ann");
    drop(committer);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains("\"uuid\":\"S1\""));
    assert!(
        lines[1].contains("\"uuid\":\"A2\"") && lines[1].contains("\"title\":\"Ann\""),
        "{}",
        lines[1]
    );
}
