//! Every pod of both overlays, started the way Kubernetes starts it: a root holding exactly
//! that pod's volumes (ConfigMap and Secret files at their mount paths, emptyDirs), the real
//! binary with the container's command and environment, against NATS running the overlay's
//! own rendered `nats.conf` and `auth.conf` with the passwords its StatefulSet passes in (three
//! nodes with route TLS for prod). The provisioning Job runs first; then each Deployment must
//! report ready on `/readyz` and exit 0 on SIGTERM.
//!
//! What differs from a cluster, on purpose: paths live under a temporary root, the host name
//! `nats` is the local server (`OPRELAY_NATS__URL`), and each admin port is a free one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oprelay_e2e::k8s::{config_file, example_secrets, named, of_kind, render};
use oprelay_testkit::{binary, eventually, free_port, healthz, NatsOptions, NatsServer, TestPki};
use serde_json::Value;

/// Secret data by Secret name: what the overlay renders, plus the Secrets another tool issues
/// (cert-manager's `nats-tls`).
type Secrets = BTreeMap<String, BTreeMap<String, String>>;

fn secrets(objects: &[Value], issued: &Secrets) -> Secrets {
    let mut out = issued.clone();
    // An overlay that renders no Secrets (prod) runs with the ones a user creates, here the
    // example component's; an overlay's own rendered Secrets come after and win.
    let examples = example_secrets();
    for s in examples.iter().chain(of_kind(objects, "Secret")) {
        let data = s["stringData"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        out.insert(s["metadata"]["name"].as_str().unwrap().to_owned(), data);
    }
    out
}

/// Replaces `from` with `to`, failing when the manifest no longer has `from`: a rewrite that
/// silently stops matching would test something else than the manifest.
fn rewrite(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the rendered file no longer has {from:?}:\n{text}"
    );
    text.replace(from, to)
}

/// The overlay's NATS: one server per StatefulSet replica, each running the rendered config
/// with its listen addresses, routes and paths moved to this machine.
struct Nats {
    servers: Vec<NatsServer>,
    url: String,
}

fn start_nats(objects: &[Value], secrets: &Secrets, tls_dir: Option<&Path>) -> Nats {
    let sts = named(objects, "StatefulSet", "nats");
    let replicas = sts["spec"]["replicas"].as_u64().unwrap() as usize;
    let conf = config_file(objects, "nats-config", "nats.conf");
    let auth = config_file(objects, "nats-config", "auth.conf");
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    let client: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
    let http: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
    let route: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
    let mut servers = Vec::new();
    for i in 0..replicas {
        let mut text = rewrite(
            conf,
            "listen: 0.0.0.0:4222",
            &format!("listen: 127.0.0.1:{}", client[i]),
        );
        text = rewrite(
            &text,
            "http: 0.0.0.0:8222",
            &format!("http: 127.0.0.1:{}", http[i]),
        );
        text = rewrite(&text, "store_dir: /data/", "store_dir: {dir}/data/");
        text = rewrite(&text, "/var/run/nats/", "{dir}/");
        if replicas > 1 {
            text = rewrite(
                &text,
                "listen: 0.0.0.0:6222",
                &format!("listen: 127.0.0.1:{}", route[i]),
            );
            for (j, port) in route.iter().enumerate() {
                text = rewrite(
                    &text,
                    &format!("nats://nats-{j}.nats-headless:6222"),
                    &format!("nats://127.0.0.1:{port}"),
                );
            }
        }
        if let Some(dir) = tls_dir {
            text = rewrite(&text, "/etc/nats/tls/", &format!("{}/", dir.display()));
        }
        // The environment the StatefulSet gives the container.
        let mut env = Vec::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = if let Some(v) = e["value"].as_str() {
                v.to_owned()
            } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
                format!("nats-{i}")
            } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
                let (secret, key) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
                secrets[secret][key].clone()
            } else {
                panic!("an env var of the NATS container this test cannot give: {e}")
            };
            env.push((name, value));
        }
        servers.push(NatsServer::start_with(NatsOptions {
            full_config: Some(text),
            files: vec![("auth.conf".into(), auth.to_owned())],
            env,
            ..Default::default()
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, port) in http.iter().enumerate() {
        while !healthz(*port).unwrap_or(false) {
            assert!(
                Instant::now() < deadline,
                "nats-{i} not healthy:\n{}",
                servers[i].log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let url = client
        .iter()
        .map(|p| match tls_dir {
            Some(_) => format!("tls://localhost:{p}"),
            None => format!("nats://127.0.0.1:{p}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    Nats { servers, url }
}

/// Writes a pod's volumes under `root`, as the kubelet mounts them for its first container.
fn mount_volumes(objects: &[Value], pod: &Value, root: &Path, secrets: &Secrets) {
    let volumes = pod["volumes"].as_array().unwrap();
    for m in pod["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let volume = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("mount {m} has no volume"));
        let target = root.join(m["mountPath"].as_str().unwrap().trim_start_matches('/'));
        let files: BTreeMap<String, String> = if let Some(cm) = volume["configMap"]["name"].as_str()
        {
            let map = of_kind(objects, "ConfigMap")
                .into_iter()
                .find(|c| c["metadata"]["name"] == cm)
                .unwrap_or_else(|| panic!("ConfigMap {cm}"));
            map["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        } else if let Some(name) = volume["secret"]["secretName"].as_str() {
            let data = secrets
                .get(name)
                .unwrap_or_else(|| panic!("Secret {name} is neither rendered nor issued"));
            match volume["secret"]["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        let key = i["key"].as_str().unwrap();
                        let value = data
                            .get(key)
                            .unwrap_or_else(|| panic!("{name} has no {key}"));
                        (i["path"].as_str().unwrap().to_owned(), value.clone())
                    })
                    .collect(),
                None => data.clone(),
            }
        } else if volume.get("emptyDir").is_some() {
            std::fs::create_dir_all(&target).unwrap();
            continue;
        } else {
            panic!("a volume this test cannot mount: {volume}");
        };
        // Paths inside the config are the pod's: they live under the root here.
        let moved = |text: &str| text.replace("\"/etc/", &format!("\"{}/etc/", root.display()));
        match m["subPath"].as_str() {
            Some(key) => {
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::write(&target, moved(&files[key])).unwrap();
            }
            None => {
                std::fs::create_dir_all(&target).unwrap();
                for (name, content) in &files {
                    std::fs::write(target.join(name), moved(content)).unwrap();
                }
            }
        }
    }
}

/// A pod's first container as a process: its command's binary, its environment with paths
/// under `root`, NATS at `nats_url`, the admin listener on `admin`.
fn spawn(pod: &Value, root: &Path, nats_url: &str, admin: u16, log: &Path) -> Child {
    let c = &pod["containers"][0];
    let command: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .chain(c["args"].as_array().into_iter().flatten())
        .map(|v| v.as_str().unwrap())
        .collect();
    let program = Path::new(command[0]).file_name().unwrap().to_str().unwrap();
    let mut cmd = Command::new(binary(program));
    cmd.args(&command[1..]).env_clear();
    for e in c["env"].as_array().into_iter().flatten() {
        let value = e["value"].as_str().expect("plain env values");
        let value = if value.starts_with('/') {
            format!("{}{value}", root.display())
        } else {
            value.to_owned()
        };
        cmd.env(e["name"].as_str().unwrap(), value);
    }
    cmd.env("OPRELAY_NATS__URL", nats_url)
        .env("OPRELAY_TELEMETRY__LISTEN", format!("127.0.0.1:{admin}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("{program} starts: {e}"))
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pod_of(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// The TLS material cert-manager would put in `nats-tls`, for overlays whose NATS speaks TLS.
fn issue_nats_tls(objects: &[Value], dir: &Path) -> (Secrets, Option<PathBuf>) {
    let conf = config_file(objects, "nats-config", "nats.conf");
    if !conf.contains("/etc/nats/tls/") {
        return (Secrets::new(), None);
    }
    let pki = TestPki::generate(dir);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let data: BTreeMap<String, String> = [
        ("tls.crt".to_owned(), read(&pki.server_cert)),
        ("tls.key".to_owned(), read(&pki.server_key)),
        ("ca.crt".to_owned(), read(&pki.ca_cert)),
    ]
    .into();
    let tls = dir.join("nats-tls");
    std::fs::create_dir_all(&tls).unwrap();
    for (k, v) in &data {
        std::fs::write(tls.join(k), v).unwrap();
    }
    (Secrets::from([("nats-tls".to_owned(), data)]), Some(tls))
}

async fn every_pod_starts(overlay: &str) {
    let objects = render(overlay);
    let work = tempfile::tempdir().unwrap();
    let (issued, tls_dir) = issue_nats_tls(&objects, work.path());
    let secrets = secrets(&objects, &issued);
    let nats = start_nats(&objects, &secrets, tls_dir.as_deref());

    // The provisioning Job, to completion.
    let job = named(&objects, "Job", "oprelay-nats-provision");
    let root = work.path().join("job");
    mount_volumes(&objects, pod_of(job), &root, &secrets);
    let log = work.path().join("job.log");
    let mut child = spawn(pod_of(job), &root, &nats.url, free_port(), &log);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "{overlay}: the provisioning Job failed ({status:?}):\n{text}"
    );

    for d in of_kind(&objects, "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap();
        let root = work.path().join(name);
        mount_volumes(&objects, pod_of(d), &root, &secrets);
        let admin = free_port();
        let log = work.path().join(format!("{name}.log"));
        let mut child = spawn(pod_of(d), &root, &nats.url, admin, &log);
        let client = reqwest::Client::new();
        let what = format!("{overlay}: {name} ready on /readyz");
        let ready = tokio::time::timeout(
            Duration::from_secs(60),
            eventually(Duration::from_secs(60), &what, || {
                let client = client.clone();
                async move {
                    let r = client
                        .get(format!("http://127.0.0.1:{admin}/readyz"))
                        .send()
                        .await
                        .ok()?;
                    r.status().is_success().then_some(())
                }
            }),
        )
        .await;
        if ready.is_err() || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "{what}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let status = wait_exit(&mut child, Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "{overlay}: {name} did not exit 0 on SIGTERM ({status:?}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    drop(nats.servers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dev_pod_starts_with_only_its_own_mounts() {
    every_pod_starts("dev").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_prod_pod_starts_with_only_its_own_mounts() {
    every_pod_starts("prod").await;
}

/// A pod missing its own Secret stops at once and names the config key whose file is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarder_without_its_sink_secret_names_the_key() {
    let objects = render("dev");
    let work = tempfile::tempdir().unwrap();
    let secrets = secrets(&objects, &Secrets::new());
    let nats = start_nats(&objects, &secrets, None);
    let mut forwarder = pod_of(named(&objects, "Deployment", "oprelay-forwarder")).clone();
    let mounts = forwarder["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap();
    mounts.retain(|m| m["name"] != "sink-credentials");
    let root = work.path().join("forwarder");
    mount_volumes(&objects, &forwarder, &root, &secrets);
    let log = work.path().join("forwarder.log");
    let mut child = spawn(&forwarder, &root, &nats.url, free_port(), &log);
    let status = wait_exit(&mut child, Duration::from_secs(30)).expect("it exits");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(text.contains("sinks[0].token_file"), "{text}");
}
