//! The Kubernetes manifests: each overlay renders with `kubectl kustomize`, validates offline
//! against the Kubernetes schemas (`kubernetes-validate --strict`), every workload has its
//! probes, resources and locked-down security context, and the `oprelay.toml` inside the
//! rendered ConfigMap loads with the services' own config loader.
//!
//! `./dev` installs the tools: kubectl, and kubernetes-validate in `target/tools-venv`.

use std::path::Path;
use std::process::Command;

use oprelay_e2e::k8s::{config_file, env_of, example_secrets, named, of_kind, render, root, run};
use serde_json::Value;

fn workloads(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
        .collect()
}

fn check_workloads(overlay: &str, objects: &[Value]) {
    for w in workloads(objects) {
        let name = w["metadata"]["name"].as_str().unwrap();
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        for l in [
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/part-of",
        ] {
            assert!(labels[l].is_string(), "{overlay}: {name} lacks label {l}");
        }
        // Each stage spreads its own replicas, not oprelay's pods as one group.
        if w["kind"] == "Deployment" {
            let spread = w["spec"]["template"]["spec"]["topologySpreadConstraints"]
                .as_array()
                .unwrap_or_else(|| panic!("{overlay}: {name} has no topology spread"));
            for c in spread {
                assert_eq!(
                    c["labelSelector"]["matchLabels"],
                    serde_json::json!({"app.kubernetes.io/name": name}),
                    "{overlay}: {name}"
                );
            }
        }
    }
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
            if c["name"] == "exporter" {
                // The NATS exporter sidecar: a port that answers is all it promises.
                assert!(c["livenessProbe"]["tcpSocket"]["port"].is_string(), "{at}");
                continue;
            }
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
    let examples = example_secrets();
    for d in of_kind(objects, "Deployment") {
        let pod = &d["spec"]["template"]["spec"];
        for v in pod["volumes"].as_array().unwrap() {
            let Some(secret) = v["secret"]["secretName"].as_str() else {
                continue;
            };
            // An overlay that renders no Secrets (prod) gets the ones a user creates, as the
            // example component has them; a Secret another tool issues (cert-manager's
            // nats-tls) is neither: its mounted items stand in with placeholder content.
            let rendered = objects
                .iter()
                .chain(examples.iter())
                .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == secret);
            let placeholder: serde_json::Map<String, Value> = v["secret"]["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    (
                        i["path"].as_str().unwrap().to_owned(),
                        Value::from("placeholder"),
                    )
                })
                .collect();
            let placeholder = Value::Object(placeholder);
            let data = match rendered {
                Some(s) => &s["stringData"],
                None => &placeholder,
            };
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
        for (_, file) in s.files().into_iter().filter(|(key, _)| key == "token_file") {
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

/// `8G`, `10Gi`, `512MiB`: bytes, for comparing JetStream limits with volume sizes.
fn bytes(size: &str) -> u64 {
    let digits: String = size.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("a size: {size}"));
    let unit = size[digits.len()..]
        .trim_end_matches('B')
        .to_ascii_uppercase();
    let mult: u64 = match unit.as_str() {
        "" => 1,
        "K" | "KI" => 1 << 10,
        "M" | "MI" => 1 << 20,
        "G" | "GI" => 1 << 30,
        "T" | "TI" => 1 << 40,
        other => panic!("unit {other} in {size}"),
    };
    n * mult
}

/// The bus as the tests run it: nats-server loads the authorization `oprelay nats
/// authorization` renders for this config (byte for byte), gets every user's password, and
/// each pod connects as its own user with only its own password mounted. Limits fit the
/// volume; lame-duck mode runs before a server stops.
fn check_nats_access(overlay: &str, objects: &[Value], config: &oprelay_service::Config) {
    use oprelay_bus::access::{authorization_config, Role};
    let sinks: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
    let want = authorization_config(&sinks);
    let auth = config_file(objects, "nats-config", "auth.conf");
    if auth != want {
        let dir = if overlay == "prod" {
            "overlays/prod"
        } else {
            "base"
        };
        let file = root().join("deploy/k8s").join(dir).join("auth.conf");
        if std::env::var_os("OPRELAY_UPDATE_DEPLOY").is_some() {
            std::fs::write(&file, &want).unwrap();
        }
        panic!(
            "{overlay}: {} is not what `oprelay nats authorization` renders for this config; \
             rerun with OPRELAY_UPDATE_DEPLOY=1 to regenerate it",
            file.display()
        );
    }
    let nats_conf = config_file(objects, "nats-config", "nats.conf");
    for line in ["include ./auth.conf", "lame_duck_duration", "pid_file"] {
        assert!(
            nats_conf.contains(line),
            "{overlay}: nats.conf lacks {line}"
        );
    }
    check_nats_conf_loads(overlay, nats_conf, auth);
    let nats = named(objects, "StatefulSet", "nats");
    let server = &nats["spec"]["template"]["spec"]["containers"][0];
    for role in Role::ALL {
        let env = env_of(server, &role.password_env())
            .unwrap_or_else(|| panic!("{overlay}: nats lacks {}", role.password_env()));
        let from = &env["valueFrom"]["secretKeyRef"];
        assert_eq!(from["name"], "oprelay-nats-users", "{overlay}");
        assert_eq!(from["key"], role.as_str(), "{overlay}");
    }
    let pre_stop = server["lifecycle"]["preStop"]["exec"]["command"].to_string();
    assert!(pre_stop.contains("ldm="), "{overlay}: preStop {pre_stop}");

    let pods: Vec<(&str, Role)> = vec![
        ("oprelay-fetcher", Role::Fetcher),
        ("oprelay-normalizer", Role::Normalizer),
        ("oprelay-forwarder", Role::Forwarder),
        ("oprelay-healthwatch", Role::Healthwatch),
    ];
    let job = named(objects, "Job", "oprelay-nats-provision");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["/usr/local/bin/oprelay", "nats", "provision"]),
        "{overlay}"
    );
    let mut workloads: Vec<(&Value, Role)> = pods
        .iter()
        .map(|(name, role)| (named(objects, "Deployment", name), *role))
        .collect();
    workloads.push((job, Role::Operator));
    for (w, role) in workloads {
        let at = format!("{overlay}: {}", w["metadata"]["name"]);
        let pod = &w["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(
            env_of(c, "OPRELAY_NATS__USER").map(|e| &e["value"]),
            Some(&Value::from(role.user())),
            "{at}"
        );
        let file = env_of(c, "OPRELAY_NATS__PASSWORD_FILE").expect("password file")["value"]
            .as_str()
            .unwrap();
        // Only its own password is mounted where the file is.
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["secret"]["secretName"] == "oprelay-nats-users")
            .unwrap_or_else(|| panic!("{at}: no NATS password volume"));
        assert_eq!(
            volume["secret"]["items"],
            serde_json::json!([{"key": role.as_str(), "path": "password"}]),
            "{at}"
        );
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume["name"])
            .expect("mounted");
        assert_eq!(
            format!("{}/password", mount["mountPath"].as_str().unwrap()),
            file,
            "{at}"
        );
        if let Some(ca) = &config.nats.tls_ca {
            let ca = ca.display().to_string();
            let ca = ca.rsplit("/etc/oprelay/").next().unwrap();
            assert!(
                c["volumeMounts"].as_array().unwrap().iter().any(|m| {
                    format!("/etc/oprelay/{ca}").starts_with(m["mountPath"].as_str().unwrap_or("-"))
                }),
                "{at}: the NATS CA {ca} is not mounted"
            );
        }
    }

    // JetStream's store fits the volume, and the streams' limits fit the store.
    let store = nats_conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("max_file_store:"))
        .map(|v| bytes(v.trim()))
        .expect("max_file_store");
    let volume = bytes(
        nats["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .unwrap(),
    );
    assert!(
        store < volume,
        "{overlay}: max_file_store {store} ≥ volume {volume}"
    );
    let n = &config.nats;
    let limits: Vec<u64> = [
        n.raw_max_bytes,
        n.events_max_bytes,
        n.dlq_max_bytes,
        n.alarms_max_bytes,
    ]
    .iter()
    .map(|b| {
        b.unwrap_or_else(|| panic!("{overlay}: every stream has a size limit"))
            .0
    })
    .collect();
    assert!(
        limits.iter().sum::<u64>() < store,
        "{overlay}: the streams' max_bytes add up beyond max_file_store"
    );
}

/// The rendered nats.conf and auth.conf as the tested nats-server reads them (`-t`: load and
/// check the configuration), with the pod's paths moved under a temporary root and the
/// environment the StatefulSet gives it.
fn check_nats_conf_loads(overlay: &str, nats_conf: &str, auth: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().display().to_string();
    let tls = tmp.path().join("etc/nats/tls");
    std::fs::create_dir_all(&tls).unwrap();
    let pki = oprelay_testkit::TestPki::generate(&tls);
    for (from, to) in [
        (&pki.server_cert, "tls.crt"),
        (&pki.server_key, "tls.key"),
        (&pki.ca_cert, "ca.crt"),
    ] {
        std::fs::copy(from, tls.join(to)).unwrap();
    }
    let conf = nats_conf
        .replace("/etc/nats/", &format!("{root}/etc/nats/"))
        .replace("/data/", &format!("{root}/data/"))
        .replace("/var/run/nats/", &format!("{root}/"));
    std::fs::write(tmp.path().join("nats.conf"), conf).unwrap();
    std::fs::write(tmp.path().join("auth.conf"), auth).unwrap();
    let mut cmd = Command::new(oprelay_testkit::nats_server_bin());
    cmd.arg("-t")
        .arg("-c")
        .arg(tmp.path().join("nats.conf"))
        .env("POD_NAME", "nats-0");
    for role in oprelay_bus::access::Role::ALL {
        cmd.env(role.password_env(), "x");
    }
    run(
        &mut cmd,
        &format!("nats-server -t of the {overlay} nats.conf"),
    );
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
    check_nats_access("dev", &objects, &config);
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
    check_nats_access("prod", &objects, &config);
    // TLS for clients and routes, and clients that require it.
    let nats_conf = config_file(&objects, "nats-config", "nats.conf");
    assert_eq!(
        nats_conf.matches("tls {").count(),
        2,
        "client and route TLS"
    );
    assert!(config.nats.url.starts_with("tls://"), "{}", config.nats.url);
    assert_eq!(replicas(&objects, "Deployment", "oprelay-fetcher"), 2);
    // The HPAs own these two counts: no `replicas` for them to fight over.
    for d in ["oprelay-normalizer", "oprelay-forwarder"] {
        let spec = &named(&objects, "Deployment", d)["spec"];
        assert!(spec.get("replicas").is_none(), "{d}: {}", spec["replicas"]);
    }
    // `kubectl apply -k` must never write a Secret's data over the real one.
    assert!(
        of_kind(&objects, "Secret").is_empty(),
        "prod renders Secrets"
    );
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
