//! The real `oprelay-fetcher` binary: its logs never contain the token, whatever happens, and
//! it exits 0 promptly on SIGTERM.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::World;
use oprelay_testkit::opsim::SimConfig;
use oprelay_testkit::{binary, eventually};

/// Starts the fetcher with its stderr drained by a thread (a full pipe would stall it).
fn spawn_capturing(mut cmd: Command) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the fetcher starts");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut logs = String::new();
        let _ = stderr.read_to_string(&mut logs);
        logs
    });
    (child, reader)
}

/// SIGTERM, then the exit status within 10 s.
async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_the_token_and_sigterm_exits_cleanly() {
    let world = World::start(SimConfig {
        backfill: 300,
        ..SimConfig::default()
    })
    .await;
    let sim = &world.sim.sim;
    assert!(
        sim.revoke(&world.token),
        "start with a rejected token: the error paths log most"
    );
    let config_path = world.dir.path().join("oprelay.toml");
    std::fs::write(
        &config_path,
        format!(
            "[nats]\nurl = \"{}\"\nprovision_at_start = true\n[telemetry]\nlisten = \"127.0.0.1:0\"\nlog_level = \"debug\"\n\
             [[accounts]]\nname = \"acme\"\nbase_url = \"{}\"\ntoken_file = \"{}\"\n\
             start_time = \"2000-01-01T00:00:00Z\"\npoll_interval = \"1s\"\n",
            world.nats.url(),
            world.sim.url(),
            world.token_path().display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(binary("oprelay-fetcher"));
    cmd.arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "debug");
    let (mut child, logs) = spawn_capturing(cmd);

    eventually(
        Duration::from_secs(30),
        "a rejected request at opsim",
        || async {
            sim.requests()
                .iter()
                .any(|r| r.status == 401 && r.feed.is_some())
                .then_some(())
        },
    )
    .await;
    // SIGTERM while the feeds sit in their slow retry after the rejection.
    let status = terminate(&mut child).await;
    assert!(status.success(), "exit status {status}");
    let logs = logs.join().unwrap();
    assert!(
        logs.contains("token rejected (401)"),
        "the rejection is logged:\n{logs}"
    );
    assert!(logs.contains("fetcher stopped"));
    assert!(
        !logs.contains(&world.token),
        "the token leaked into the logs"
    );
    let signature = world.token.rsplit('.').next().unwrap();
    assert!(
        !logs.contains(signature),
        "part of the token leaked into the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_run_logs_no_token_either() {
    let world = World::start(SimConfig {
        backfill: 2_000,
        ..SimConfig::default()
    })
    .await;
    let config_path = world.dir.path().join("oprelay.toml");
    std::fs::write(
        &config_path,
        format!(
            "[nats]\nurl = \"{}\"\nprovision_at_start = true\n[telemetry]\nlisten = \"127.0.0.1:0\"\n\
             [[accounts]]\nname = \"acme\"\nbase_url = \"{}\"\ntoken_file = \"{}\"\n\
             start_time = \"2000-01-01T00:00:00Z\"\npage_size = 100\n",
            world.nats.url(),
            world.sim.url(),
            world.token_path().display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(binary("oprelay-fetcher"));
    cmd.arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "trace");
    let (mut child, logs) = spawn_capturing(cmd);
    eventually(
        Duration::from_secs(60),
        "the backfill in OP_RAW",
        || async { (world.raw_count().await >= 6_000).then_some(()) },
    )
    .await;
    assert!(terminate(&mut child).await.success());
    let logs = logs.join().unwrap();
    assert!(logs.contains("lease claimed"), "trace logs were captured");
    assert!(
        !logs.contains(&world.token),
        "the token leaked into trace logs"
    );
    world
        .assert_exactly_once(&oprelay_events::Feed::ALL, 2_000)
        .await;
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// Two fetcher processes on one feed; the one polling it is frozen (SIGSTOP) past its lease
/// TTL, the other takes the feed over, then the frozen one wakes (SIGCONT) with a request or a
/// publish half done. Nothing is lost and every event is in `OP_RAW` once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_past_its_lease_neither_loses_nor_duplicates() {
    const TOTAL: usize = 3_000;
    let world = World::start(SimConfig {
        backfill: TOTAL as u64,
        ..SimConfig::default()
    })
    .await;
    let config_for = |replica: &str| {
        let path = world.dir.path().join(format!("{replica}.toml"));
        std::fs::write(
            &path,
            format!(
                "[nats]\nurl = \"{}\"\nprovision_at_start = true\n[telemetry]\nlisten = \"127.0.0.1:0\"\n\
                 [fetcher]\nreplica_id = \"{replica}\"\nlease_ttl = \"3s\"\nrequests_per_minute = 240\n\
                 [[accounts]]\nname = \"acme\"\nbase_url = \"{}\"\ntoken_file = \"{}\"\n\
                 start_time = \"2000-01-01T00:00:00Z\"\npage_size = 50\nfeeds = [\"item_usages\"]\n",
                world.nats.url(),
                world.sim.url(),
                world.token_path().display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(binary("oprelay-fetcher"));
        cmd.arg("--config").arg(&path);
        cmd
    };
    let (mut a, a_logs) = spawn_capturing(config_for("a"));
    eventually(Duration::from_secs(30), "a's first pages", || async {
        (world.raw_count().await >= 300).then_some(())
    })
    .await;
    let (mut b, b_logs) = spawn_capturing(config_for("b"));
    signal(&a, "-STOP");
    let frozen_at = world.raw_count().await;
    let leases = oprelay_bus::JsonKv::open(&world.bus, oprelay_events::names::BUCKET_LEASES)
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "b polling the feed", || async {
        let owner = leases
            .get::<oprelay_events::Lease>("acme.item_usages")
            .await
            .ok()
            .flatten()
            .map(|l| l.value.owner);
        let progressed = world.raw_count().await >= frozen_at + 300;
        (owner.as_deref() == Some("b") && progressed).then_some(())
    })
    .await;
    signal(&a, "-CONT");
    eventually(Duration::from_secs(60), "the whole backfill", || async {
        (world.raw_count().await >= TOTAL).then_some(())
    })
    .await;
    assert!(terminate(&mut a).await.success());
    assert!(terminate(&mut b).await.success());
    let (a_logs, b_logs) = (a_logs.join().unwrap(), b_logs.join().unwrap());
    world
        .assert_exactly_once(&[oprelay_events::Feed::ItemUsages], TOTAL as u64)
        .await;
    // Whether a's poller noticed the lapsed lease itself or a's next lease round stopped it
    // first depends on which timer fires first after SIGCONT; either way it acted no more.
    assert!(
        a_logs.contains("stopped polling"),
        "a's poller stopped:\n{a_logs}"
    );
    assert!(b_logs.contains("lease claimed"), "b took the feed over");
}

/// A NATS URL that carries a password (`nats://user:pass@host`) never reaches the logs, at
/// any level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_nats_url_is_never_logged() {
    const PASSWORD: &str = "pw-Zq8rT2mVx";
    let nats = oprelay_testkit::NatsServer::start_with_config(&format!(
        "authorization {{\n  user: svc\n  password: {PASSWORD}\n}}\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("oprelay.toml");
    let url = nats
        .url()
        .replace("nats://", &format!("nats://svc:{PASSWORD}@"));
    std::fs::write(
        &config_path,
        format!("[nats]\nurl = \"{url}\"\nprovision_at_start = true\n[telemetry]\nlisten = \"127.0.0.1:0\"\nlog_level = \"trace\"\n"),
    )
    .unwrap();
    let mut cmd = Command::new(binary("oprelay-fetcher"));
    cmd.arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "trace");
    let (mut child, logs) = spawn_capturing(cmd);
    // Readiness is logged once connected; SIGTERM after it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let bus = loop {
        match oprelay_bus::Bus::connect(&oprelay_bus::NatsSettings {
            url: url.clone(),
            ..Default::default()
        })
        .await
        {
            Ok(b) => break b,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    eventually(
        Duration::from_secs(20),
        "the fetcher's lease bucket",
        || async {
            oprelay_bus::JsonKv::open(&bus, oprelay_events::names::BUCKET_LEASES)
                .await
                .ok()
        },
    )
    .await;
    assert!(terminate(&mut child).await.success());
    let logs = logs.join().unwrap();
    assert!(
        logs.contains("connected to NATS"),
        "the connection is logged:\n{logs}"
    );
    assert!(
        !logs.contains(PASSWORD),
        "the NATS password leaked:\n{logs}"
    );
}
