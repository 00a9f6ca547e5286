//! The Kubernetes manifests: each overlay renders with `kubectl kustomize`, validates offline
//! against the Kubernetes schemas (`kubernetes-validate --strict`), every workload has its
//! probes, resources and locked-down security context, and the `oprelay.toml` inside the
//! rendered ConfigMap loads with the services' own config loader.
//!
//! `./dev` installs the tools: kubectl, and kubernetes-validate in `target/tools-venv`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A tool from the venv `./dev` makes, or from PATH.
fn tool(name: &str) -> PathBuf {
    let venv = root().join("target/tools-venv/bin").join(name);
    if venv.is_file() {
        return venv;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is not installed; `./dev test` installs it (see README, Development)")
    })
}

fn run(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The overlay rendered, validated, and parsed into its objects.
fn render(overlay: &str) -> Vec<Value> {
    let dir = root().join("deploy/k8s/overlays").join(overlay);
    let yaml = run(
        Command::new(tool("kubectl")).arg("kustomize").arg(&dir),
        &format!("kubectl kustomize {overlay}"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join(format!("{overlay}.yaml"));
    std::fs::write(&file, &yaml).unwrap();
    let report = run(
        Command::new(tool("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", "1.30.0"])
            .arg(&file),
        &format!("kubernetes-validate of the {overlay} overlay"),
    );
    let report = String::from_utf8_lossy(&report);
    assert!(
        !report.contains("ERROR") && !report.contains("WARN"),
        "{overlay}: {report}"
    );
    // YAML to JSON with the PyYAML that kubernetes-validate brings.
    let python = tool("python3");
    let mut child = Command::new(python)
        .args([
            "-c",
            "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "YAML → JSON");
    serde_json::from_slice(&out.stdout).expect("rendered objects")
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn workloads(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
        .collect()
}

fn check_workloads(overlay: &str, objects: &[Value]) {
    let pdb_selectors: Vec<&Value> = of_kind(objects, "PodDisruptionBudget")
        .into_iter()
        .map(|p| &p["spec"]["selector"]["matchLabels"])
        .collect();
    for w in workloads(objects) {
        let name = w["metadata"]["name"].as_str().unwrap();
        let at = format!("{overlay}: {} {name}", w["kind"].as_str().unwrap());
        let pod = &w["spec"]["template"]["spec"];
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{at}");
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{at}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{at}");
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{at}"
            );
            for r in ["requests", "limits"] {
                for k in ["cpu", "memory"] {
                    assert!(c["resources"][r][k].is_string(), "{at}: resources.{r}.{k}");
                }
            }
            let live = c["livenessProbe"]["httpGet"]["path"]
                .as_str()
                .unwrap_or_default();
            let ready = c["readinessProbe"]["httpGet"]["path"]
                .as_str()
                .unwrap_or_default();
            assert!(live.starts_with("/healthz"), "{at}: liveness {live:?}");
            if name.starts_with("oprelay-") {
                assert_eq!(ready, "/readyz", "{at}");
                // Prometheus scrapes the port the service listens on.
                let annotations = &w["spec"]["template"]["metadata"]["annotations"];
                assert_eq!(annotations["prometheus.io/scrape"], "true", "{at}");
                let port = c["ports"][0]["containerPort"].as_u64().unwrap();
                assert_eq!(annotations["prometheus.io/port"], port.to_string(), "{at}");
                let listen = c["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == "OPRELAY_TELEMETRY__LISTEN")
                    .map(|e| e["value"].as_str().unwrap().to_owned());
                assert_eq!(listen, Some(format!("0.0.0.0:{port}")), "{at}");
            } else {
                assert!(ready.starts_with("/healthz"), "{at}: readiness {ready:?}");
            }
        }
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        assert!(
            pdb_selectors.iter().any(|sel| sel
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| &labels[k] == v)),
            "{at}: no PodDisruptionBudget selects it"
        );
    }
    let policies: Vec<&str> = of_kind(objects, "NetworkPolicy")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    for p in [
        "default-deny",
        "nats",
        "fetcher-to-1password",
        "forwarder-to-siems",
    ] {
        assert!(policies.contains(&p), "{overlay}: NetworkPolicy {p}");
    }
    // Only the fetcher may leave the cluster on 443 to reach 1Password (healthwatch's
    // webhooks aside); the forwarder owns the SIEM ports.
    let egress_443: Vec<&str> = of_kind(objects, "NetworkPolicy")
        .into_iter()
        .filter(|p| {
            p["spec"]["egress"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| {
                    e["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|port| port["port"] == 443)
                })
        })
        .map(|p| {
            p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                .as_str()
                .unwrap_or("*")
        })
        .collect();
    let mut egress_443_sorted = egress_443.clone();
    egress_443_sorted.sort();
    assert_eq!(
        egress_443_sorted,
        [
            "oprelay-fetcher",
            "oprelay-forwarder",
            "oprelay-healthwatch"
        ],
        "{overlay}"
    );
}

/// The rendered oprelay.toml through the real loader; token files must be where the
/// Secrets are mounted.
fn check_config(overlay: &str, objects: &[Value]) -> oprelay_service::Config {
    let cm = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| {
            c["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("oprelay-config")
        })
        .expect("the oprelay-config ConfigMap");
    let toml = cm["data"]["oprelay.toml"].as_str().expect("oprelay.toml");
    // Mount the Secrets as the pods would (each key a file under its mountPath, below a
    // temporary root), so the loader finds every token file the config names.
    let tmp = tempfile::tempdir().unwrap();
    for d in of_kind(objects, "Deployment") {
        let pod = &d["spec"]["template"]["spec"];
        for v in pod["volumes"].as_array().unwrap() {
            let Some(secret) = v["secret"]["secretName"].as_str() else {
                continue;
            };
            let data = &named(objects, "Secret", secret)["stringData"];
            for m in pod["containers"][0]["volumeMounts"].as_array().unwrap() {
                if m["name"] != v["name"] {
                    continue;
                }
                let dir = tmp
                    .path()
                    .join(m["mountPath"].as_str().unwrap().trim_start_matches('/'));
                std::fs::create_dir_all(&dir).unwrap();
                for (key, value) in data.as_object().unwrap() {
                    std::fs::write(dir.join(key), value.as_str().unwrap()).unwrap();
                }
            }
        }
    }
    let rooted = toml.replace(
        "\"/etc/oprelay/",
        &format!("\"{}/etc/oprelay/", tmp.path().display()),
    );
    let path = tmp.path().join("oprelay.toml");
    std::fs::write(&path, rooted).unwrap();
    let config = oprelay_service::config::load(Some(&path))
        .unwrap_or_else(|e| panic!("{overlay}: the rendered oprelay.toml does not load: {e}"));
    assert!(!config.accounts.is_empty() && !config.sinks.is_empty());

    let mounts = |deployment: &str| -> Vec<String> {
        let d = named(objects, "Deployment", deployment);
        let pod = &d["spec"]["template"]["spec"];
        let secret_volumes: Vec<&str> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.get("secret").is_some())
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| secret_volumes.contains(&m["name"].as_str().unwrap()))
            .map(|m| m["mountPath"].as_str().unwrap().to_owned())
            .collect()
    };
    let fetcher_secrets = mounts("oprelay-fetcher");
    for a in &config.accounts {
        let file = a.token_file.as_ref().expect("tokens come from files");
        let file = &Path::new("/").join(file.strip_prefix(tmp.path()).unwrap());
        assert!(
            fetcher_secrets.iter().any(|m| file.starts_with(m)),
            "{overlay}: {} is not on a Secret the fetcher mounts ({fetcher_secrets:?})",
            file.display()
        );
    }
    let forwarder_secrets = mounts("oprelay-forwarder");
    for s in &config.sinks {
        if let Some(file) = &s.token_file {
            let file = &Path::new("/").join(file.strip_prefix(tmp.path()).unwrap());
            assert!(
                forwarder_secrets.iter().any(|m| file.starts_with(m)),
                "{overlay}: sink {} token {} is not on a Secret the forwarder mounts",
                s.name,
                file.display()
            );
        }
    }
    config
}

fn replicas(objects: &[Value], kind: &str, name: &str) -> u64 {
    named(objects, kind, name)["spec"]["replicas"]
        .as_u64()
        .unwrap()
}

#[test]
fn dev_overlay_renders_validates_and_runs_one_of_everything() {
    let objects = render("dev");
    check_workloads("dev", &objects);
    let config = check_config("dev", &objects);
    for d in [
        "oprelay-fetcher",
        "oprelay-normalizer",
        "oprelay-forwarder",
        "oprelay-healthwatch",
    ] {
        assert_eq!(replicas(&objects, "Deployment", d), 1, "{d}");
    }
    assert_eq!(replicas(&objects, "StatefulSet", "nats"), 1);
    assert_eq!(config.nats.replicas, 1);
    assert!(of_kind(&objects, "HorizontalPodAutoscaler").is_empty());
    assert!(objects
        .iter()
        .all(|o| o["kind"] == "Namespace" || o["metadata"]["namespace"] == "oprelay-dev"));
}

#[test]
fn prod_overlay_renders_validates_and_runs_a_nats_cluster() {
    let objects = render("prod");
    check_workloads("prod", &objects);
    let config = check_config("prod", &objects);
    assert_eq!(replicas(&objects, "Deployment", "oprelay-fetcher"), 2);
    assert_eq!(replicas(&objects, "Deployment", "oprelay-normalizer"), 2);
    assert_eq!(replicas(&objects, "Deployment", "oprelay-forwarder"), 2);
    assert_eq!(replicas(&objects, "Deployment", "oprelay-healthwatch"), 1);
    let nats = replicas(&objects, "StatefulSet", "nats");
    assert_eq!(nats, 3);
    assert_eq!(
        config.nats.replicas as u64, nats,
        "streams replicated on every server"
    );
    let mut hpas: Vec<(&str, u64)> = of_kind(&objects, "HorizontalPodAutoscaler")
        .iter()
        .map(|h| {
            let target = h["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
            (target, h["spec"]["minReplicas"].as_u64().unwrap())
        })
        .collect();
    hpas.sort();
    assert_eq!(hpas, [("oprelay-forwarder", 2), ("oprelay-normalizer", 2)]);
    // Routes name every server of the StatefulSet through its headless Service.
    let nats_conf = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| {
            c["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("nats-config")
        })
        .and_then(|c| c["data"]["nats.conf"].as_str())
        .expect("nats.conf");
    for i in 0..nats {
        assert!(
            nats_conf.contains(&format!("nats://nats-{i}.nats-headless:6222")),
            "{nats_conf}"
        );
    }
    let claims = &named(&objects, "StatefulSet", "nats")["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claims["spec"]["resources"]["requests"]["storage"], "50Gi");
}
