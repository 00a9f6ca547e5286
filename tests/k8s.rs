//! The Kubernetes manifests as test data: render an overlay with `kubectl kustomize`, validate
//! it offline with `kubernetes-validate --strict`, and read its objects. Shared by the
//! deployment tests and the pod-faithful tests.
//!
//! `./dev` installs the tools: kubectl, and kubernetes-validate in `target/tools-venv`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A tool from the venv `./dev` makes, or from PATH.
pub fn tool(name: &str) -> PathBuf {
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

pub fn run(cmd: &mut Command, what: &str) -> Vec<u8> {
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
pub fn render(overlay: &str) -> Vec<Value> {
    render_dir(
        &root().join("deploy/k8s/overlays").join(overlay),
        overlay,
        &[],
    )
}

/// An overlay with components added, as a user's own kustomization adds them: a kustomization
/// in a temporary directory that names the overlay and the components by relative paths
/// (kustomize refuses absolute ones).
pub fn render_with_components(
    overlay: &str,
    namespace: &str,
    components: &[&str],
    custom_kinds: &[&str],
) -> Vec<Value> {
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp
        .path()
        .components()
        .skip(1)
        .map(|_| "..")
        .collect::<Vec<_>>()
        .join("/");
    let deploy = root().join("deploy/k8s");
    let deploy = deploy.strip_prefix("/").unwrap().display();
    let mut k = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {namespace}\n\
         resources:\n  - {up}/{deploy}/overlays/{overlay}\ncomponents:\n"
    );
    for c in components {
        k.push_str(&format!("  - {up}/{deploy}/components/{c}\n"));
    }
    std::fs::write(tmp.path().join("kustomization.yaml"), k).unwrap();
    render_dir(tmp.path(), overlay, custom_kinds)
}

/// Renders a kustomization, validates it against the Kubernetes 1.30 schemas, and parses it.
/// `custom_kinds` are custom resources (the Prometheus Operator's) that the validator has no
/// schema for; only they may be reported as unknown, and their tests check them instead.
pub fn render_dir(dir: &Path, name: &str, custom_kinds: &[&str]) -> Vec<Value> {
    let yaml = run(
        Command::new(tool("kubectl")).arg("kustomize").arg(dir),
        &format!("kubectl kustomize {name}"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join(format!("{name}.yaml"));
    std::fs::write(&file, &yaml).unwrap();
    let report = run(
        Command::new(tool("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", "1.30.0"])
            .arg(&file),
        &format!("kubernetes-validate of {name}"),
    );
    let report = String::from_utf8_lossy(&report);
    for line in report.lines() {
        let unknown_custom = line.contains("Couldn't find schema for kind")
            && custom_kinds
                .iter()
                .any(|k| line.contains(&format!("kind {k} with")));
        assert!(
            unknown_custom || !(line.contains("ERROR") || line.contains("WARN")),
            "{name}: {report}"
        );
    }
    match yaml_documents(&yaml) {
        Value::Array(objects) => objects,
        other => panic!("rendered objects: {other}"),
    }
}

/// YAML documents as JSON (an array of the non-empty ones), with the PyYAML that
/// kubernetes-validate brings.
pub fn yaml_documents(yaml: &[u8]) -> Value {
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
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "YAML → JSON");
    serde_json::from_slice(&out.stdout).expect("YAML documents")
}

pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// A ConfigMap's file, by the ConfigMap's name prefix (kustomize appends a hash).
pub fn config_file<'a>(objects: &'a [Value], map: &str, file: &str) -> &'a str {
    of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"].as_str().unwrap().starts_with(map))
        .and_then(|c| c["data"][file].as_str())
        .unwrap_or_else(|| panic!("{file} in ConfigMap {map}"))
}

pub fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// The Secrets a user creates before applying an overlay that renders none (prod): the
/// example component's, as the dev overlay renders them.
pub fn example_secrets() -> Vec<Value> {
    render("dev")
        .into_iter()
        .filter(|o| o["kind"] == "Secret")
        .collect()
}
