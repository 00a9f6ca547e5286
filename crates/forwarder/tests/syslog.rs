//! The syslog sink against a real rsyslog (Debian's package): RFC 5424 over TCP with octet
//! counting, and over TLS (RFC 5425) with a private CA.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::{Forwarder, World};
use oprelay_events::Feed;
use oprelay_testkit::{eventually, free_port, TestPki};

struct Rsyslog {
    child: Child,
    port: u16,
    udp_port: u16,
    out: std::path::PathBuf,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts rsyslogd in the foreground with only an imtcp input writing MSGID, APP-NAME and MSG
/// of every message to a file. `tls`: the PKI for a gtls listener.
async fn rsyslog(dir: &std::path::Path, tls: Option<&TestPki>) -> Rsyslog {
    let port = free_port();
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    rsyslog_on(dir, tls, port, udp_port).await
}

/// [`rsyslog`] on given ports: a restart listens where the first one did.
async fn rsyslog_on(
    dir: &std::path::Path,
    tls: Option<&TestPki>,
    port: u16,
    udp_port: u16,
) -> Rsyslog {
    let out = dir.join("received.log");
    let work = dir.join("rsyslog-work");
    std::fs::create_dir_all(&work).unwrap();
    let global_tls = tls
        .map(|p| {
            format!(
                " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                p.ca_cert.display(),
                p.server_cert.display(),
                p.server_key.display()
            )
        })
        .unwrap_or_default();
    let module = if tls.is_some() {
        "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")"
    } else {
        "module(load=\"imtcp\")"
    };
    let conf = format!(
        "global(workDirectory=\"{work}\" maxMessageSize=\"64k\"{global_tls})\n{module}\n\
         input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n\
         module(load=\"imudp\")\ninput(type=\"imudp\" port=\"{udp_port}\" address=\"127.0.0.1\")\n\
         template(name=\"fields\" type=\"string\" string=\"%msgid%|%app-name%|%pri%|%msg%\\n\")\n\
         action(type=\"omfile\" file=\"{out}\" template=\"fields\")\n",
        work = work.display(),
        out = out.display()
    );
    let conf_path = dir.join("rsyslog.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("rsyslogd");
    let child = Command::new(bin)
        .arg("-n")
        .arg("-f")
        .arg(&conf_path)
        .arg("-i")
        .arg(dir.join("rsyslog.pid"))
        .spawn()
        .expect("rsyslogd starts (apt-get install rsyslog rsyslog-gnutls)");
    eventually(Duration::from_secs(20), "rsyslog listening", || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    })
    .await;
    // UDP has no handshake: wait until a probe datagram is written out, so the test's own
    // datagrams are not sent before imudp listens.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let out_probe = out.clone();
    eventually(Duration::from_secs(20), "rsyslog's UDP input", || {
        let _ = probe.send_to(b"<86>1 - - probe - - - ready", ("127.0.0.1", udp_port));
        let out = out_probe.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            std::fs::read_to_string(&out)
                .ok()
                .filter(|t| t.contains("ready"))
                .map(|_| ())
        }
    })
    .await;
    Rsyslog {
        child,
        port,
        udp_port,
        out,
    }
}

fn received(r: &Rsyslog) -> Vec<(String, String, String, serde_json::Value)> {
    std::fs::read_to_string(&r.out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, '|');
            let (msgid, app, pri, msg) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            let json = serde_json::from_str(msg.trim_start_matches('\u{feff}').trim()).ok()?;
            Some((msgid.to_owned(), app.to_owned(), pri.to_owned(), json))
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Tcp,
    Tls,
    Udp,
}

async fn check(mode: Mode) {
    let tls = mode == Mode::Tls;
    let world = World::start().await;
    let pki = tls.then(|| TestPki::generate(world.dir.path()));
    let rsyslog = rsyslog(world.dir.path(), pki.as_ref()).await;
    // UDP is lossy by design: a burst larger than the receiver's socket buffer is dropped by
    // the kernel, so the UDP case sends a small batch.
    let ids = if mode == Mode::Udp {
        world.publish_events(Feed::AuditEvents, 1, 20).await
    } else {
        world.publish_events(Feed::AuditEvents, 3, 100).await
    };
    let (transport, port) = match (mode, pki.as_ref()) {
        (Mode::Udp, _) => ("transport = \"udp\"\n".to_owned(), rsyslog.udp_port),
        (Mode::Tls, Some(p)) => (
            format!(
                "transport = \"tls\"\ntls = {{ ca_file = \"{}\" }}\n",
                p.ca_cert.display()
            ),
            rsyslog.port,
        ),
        _ => ("transport = \"tcp\"\n".to_owned(), rsyslog.port),
    };
    let config = world.config(&format!(
        "[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"localhost:{port}\"\n{transport}batch = {{ max_events = 64, timeout = \"100ms\" }}\n"
    ));
    let fwd = Forwarder::start(config);
    eventually(
        Duration::from_secs(60),
        "every record at rsyslog",
        || async { (received(&rsyslog).len() >= ids.len()).then_some(()) },
    )
    .await;
    fwd.stop().await;
    let got = received(&rsyslog);
    assert_eq!(got.len(), ids.len(), "each record once");
    for (msgid, app, pri, json) in &got {
        assert_eq!(msgid, "OnePassword.AuditEvent");
        assert_eq!(app, "oprelay");
        assert_eq!(pri, "86", "authpriv.info");
        assert!(ids.contains(&json["p_row_id"].as_str().unwrap().to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5424_over_tcp_with_octet_counting() {
    check(Mode::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5426_over_udp() {
    check(Mode::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5425_over_tls_with_a_private_ca() {
    check(Mode::Tls).await;
}

/// A receiver restarted between two batches: the connection it closed is noticed before the
/// next batch is written into it, so that batch is not counted delivered and lost.
async fn restart_between_batches(tls: bool) {
    let world = World::start().await;
    let pki = tls.then(|| TestPki::generate(world.dir.path()));
    let first = rsyslog(world.dir.path(), pki.as_ref()).await;
    let (port, udp_port) = (first.port, first.udp_port);
    let transport = match &pki {
        Some(p) => format!(
            "transport = \"tls\"\ntls = {{ ca_file = \"{}\" }}\n",
            p.ca_cert.display()
        ),
        None => "transport = \"tcp\"\n".to_owned(),
    };
    let config = world.config(&format!(
        "[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"localhost:{port}\"\n{transport}batch = {{ max_events = 64, timeout = \"100ms\" }}\n"
    ));
    let before = world.publish_events(Feed::AuditEvents, 1, 20).await;
    let fwd = Forwarder::start(config);
    eventually(Duration::from_secs(30), "the first batch", || async {
        (received(&first).len() >= before.len()).then_some(())
    })
    .await;
    // rsyslog restarts (a deploy, a crash): the forwarder's connection is closed under it.
    drop(first);
    let second = rsyslog_on(world.dir.path(), pki.as_ref(), port, udp_port).await;
    let after = world.publish_events(Feed::ItemUsages, 1, 20).await;
    eventually(
        Duration::from_secs(30),
        "the batch after the restart",
        || async {
            let got: Vec<String> = received(&second)
                .iter()
                .filter_map(|r| r.3["p_row_id"].as_str().map(str::to_owned))
                .collect();
            after.iter().all(|id| got.contains(id)).then_some(())
        },
    )
    .await;
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_receiver_restarted_between_batches_loses_nothing() {
    restart_between_batches(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_receiver_restarted_between_batches_loses_nothing() {
    restart_between_batches(true).await;
}
