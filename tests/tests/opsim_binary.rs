//! `opsim serve`, the binary the demo and the README use: it prints a token that works, writes
//! it to --token-file, and stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use oprelay_events::{ItemUsage, Page};
use oprelay_testkit::{binary, free_port};

#[tokio::test]
async fn serve_prints_a_working_token_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    let port = free_port();
    let mut child = Command::new(binary("opsim"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--backfill",
            "25",
        ])
        .arg("--token-file")
        .arg(&token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("opsim starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("token line");
    let token = line.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT-shaped token: {token}");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    let claims = opsim::decode_claims(&token).expect("claims");
    assert_eq!(claims.aud, vec![format!("127.0.0.1:{port}")]);

    let page: Page<ItemUsage> = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v2/itemusages"))
        .bearer_auth(&token)
        .body(r#"{"limit":100,"start_time":"2000-01-01T00:00:00Z"}"#)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("a page of item usages");
    assert_eq!(page.items.len(), 25);
    assert!(!page.has_more);

    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "opsim did not stop within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit}");
}
