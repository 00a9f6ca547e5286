//! Every binary says which build it is (`--version`: the release and the source revision), and
//! every service exports the same as `oprelay_build_info{version,revision} 1`.

use std::process::Command;

use oprelay_e2e::{Pipeline, Spec, SERVICES};
use oprelay_testkit::binary;

/// What the image ships (opsim, the simulator, is a development tool with a plain version).
const BINARIES: [&str; 5] = [
    "oprelay",
    "oprelay-fetcher",
    "oprelay-normalizer",
    "oprelay-forwarder",
    "oprelay-healthwatch",
];

fn version_of(name: &str) -> String {
    let out = Command::new(binary(name))
        .arg("--version")
        .env_remove("OPRELAY_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{name} --version: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_and_service_names_its_version_and_revision() {
    let expected = format!("{} (", env!("CARGO_PKG_VERSION"));
    let mut revisions = Vec::new();
    for name in BINARIES {
        let text = version_of(name);
        assert!(text.starts_with(&format!("{name} {expected}")), "{text}");
        let revision = text
            .split('(')
            .nth(1)
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no revision in {text:?}"));
        assert!(!revision.is_empty());
        revisions.push(revision.to_owned());
    }
    revisions.dedup();
    assert_eq!(revisions.len(), 1, "one build, one revision: {revisions:?}");

    let p = Pipeline::start(Spec {
        backfill: 0,
        ..Default::default()
    })
    .await;
    for service in SERVICES {
        let text = p.scrape(service).await.expect("metrics answer");
        let line = text
            .lines()
            .find(|l| l.starts_with("oprelay_build_info{"))
            .unwrap_or_else(|| panic!("{service}: no oprelay_build_info in\n{text}"));
        assert!(
            line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
                && line.contains(&format!("revision=\"{}\"", revisions[0]))
                && line.ends_with(" 1"),
            "{service}: {line}"
        );
    }
}
