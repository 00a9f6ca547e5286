//! The monitoring component (`deploy/k8s/components/monitoring`) is only worth something if its
//! queries find data. These tests render it into the prod overlay as a user's kustomization
//! would, load its rules with `promtool`, check that every PodMonitor reaches a pod's port, and
//! then run the pipeline (with a refused record and a failing request, so the failure metrics
//! exist too), scrape every service's `/metrics`, and fail when an alert rule or a dashboard
//! panel names a metric or a label that no service exports.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::Duration;

use oprelay_e2e::k8s::{self, of_kind};
use oprelay_e2e::{Pipeline, Spec, SERVICES};
use oprelay_testkit::eventually;
use promql_parser::parser::{self, Expr, VectorSelector};
use serde_json::Value;

/// Series Prometheus makes itself for every target it scrapes.
const PROMETHEUS_OWN: &[&str] = &["up"];
/// Labels Prometheus adds to every series of a PodMonitor's targets.
const TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "namespace",
    "pod",
    "container",
    "endpoint",
];
const CUSTOM_KINDS: &[&str] = &["PodMonitor", "PrometheusRule"];

fn rendered() -> Vec<Value> {
    k8s::render_with_components("prod", "oprelay", &["monitoring"], CUSTOM_KINDS)
}

/// Every PromQL expression of the component: `(where, expr, label names its text templates use)`.
fn queries(objects: &[Value]) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule_set in of_kind(objects, "PrometheusRule") {
        for group in rule_set["spec"]["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
                let texts: Vec<&str> = rule["annotations"]
                    .as_object()
                    .map(|a| a.values().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                out.push((
                    format!("alert {name}"),
                    rule["expr"].as_str().unwrap().to_owned(),
                    texts.iter().flat_map(|t| template_labels(t)).collect(),
                ));
            }
        }
    }
    let dashboard = dashboard(objects);
    let mut panels: Vec<&Value> = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {:?}", panel["title"].as_str().unwrap()),
                target["expr"].as_str().unwrap().to_owned(),
                template_labels(target["legendFormat"].as_str().unwrap_or("")),
            ));
        }
    }
    out
}

fn dashboard(objects: &[Value]) -> Value {
    let map = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the dashboard ConfigMap, labelled for Grafana's sidecar");
    serde_json::from_str(map["data"]["oprelay-pipeline.json"].as_str().unwrap())
        .expect("the dashboard is JSON")
}

/// `{{sink}}` (Grafana legends) and `{{ $labels.sink }}` (alert annotations).
fn template_labels(text: &str) -> Vec<String> {
    text.split("{{")
        .skip(1)
        .filter_map(|t| t.split_once("}}"))
        .map(|(inner, _)| inner.trim().trim_start_matches("$labels.").to_owned())
        .filter(|l| l != "$value")
        .collect()
}

#[test]
fn the_monitoring_component_renders_and_its_rules_load() {
    let objects = rendered();
    // A PodMonitor per stage and for NATS, each selecting pods that have the port it scrapes.
    let monitors = of_kind(&objects, "PodMonitor");
    let workloads: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
        .collect();
    assert_eq!(
        monitors.len(),
        workloads.len(),
        "one PodMonitor per workload"
    );
    for m in &monitors {
        let name = m["metadata"]["name"].as_str().unwrap();
        let selector = m["spec"]["selector"]["matchLabels"].as_object().unwrap();
        let pods: Vec<&&Value> = workloads
            .iter()
            .filter(|w| {
                let labels = &w["spec"]["template"]["metadata"]["labels"];
                selector.iter().all(|(k, v)| &labels[k] == v)
            })
            .collect();
        assert_eq!(pods.len(), 1, "PodMonitor {name} selects one workload");
        let ports: Vec<&str> = pods[0]["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .filter_map(|p| p["name"].as_str())
            .collect();
        for endpoint in m["spec"]["podMetricsEndpoints"].as_array().unwrap() {
            let port = endpoint["port"].as_str().unwrap();
            assert!(
                ports.contains(&port),
                "{name}: port {port} not in {ports:?}"
            );
        }
    }

    // promtool loads the rules as Prometheus would (syntax, types, templates).
    let rules = of_kind(&objects, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oprelay-rules.json");
    std::fs::write(&file, rules[0]["spec"].to_string()).unwrap();
    let out = k8s::run(
        Command::new(k8s::tool("promtool"))
            .args(["check", "rules"])
            .arg(&file),
        "promtool check rules",
    );
    let report = String::from_utf8_lossy(&out);
    let alerts = queries(&objects)
        .iter()
        .filter(|(w, _, _)| w.starts_with("alert "))
        .count();
    assert!(
        report.contains(&format!("SUCCESS: {alerts} rules found")),
        "{report}"
    );

    // The dashboard: every panel queries the data source chosen in its variable.
    let dash = dashboard(&objects);
    assert_eq!(dash["uid"], "oprelay-pipeline");
    assert!(
        queries(&objects).len() > alerts,
        "the dashboard has queries"
    );
    for (what, expr, _) in queries(&objects) {
        parser::parse(&expr).unwrap_or_else(|e| panic!("{what}: {expr}: {e}"));
    }
}

/// What the services expose: each series name with the label names seen on it.
#[derive(Default, Debug)]
struct Exported {
    series: HashMap<String, BTreeSet<String>>,
    all_labels: BTreeSet<String>,
}

impl Exported {
    /// Reads one scrape. A family without a sample yet (a counter nobody incremented) is known
    /// by its `# TYPE` line; its labels are unknown, so any exported label is accepted for it.
    fn add(&mut self, scrape: &str) {
        for line in scrape.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').unwrap();
                let names = match kind {
                    "counter" => vec![format!("{family}_total")],
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .map(|s| format!("{family}{s}"))
                        .collect(),
                    "info" => vec![format!("{family}_info")],
                    _ => vec![family.to_owned()],
                };
                for n in names {
                    self.series.entry(n).or_default();
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let (name, labels) = sample_labels(line);
                self.all_labels.extend(labels.iter().cloned());
                self.series.entry(name).or_default().extend(labels);
            }
        }
    }

    fn labels_of(&self, metric: &str) -> BTreeSet<String> {
        let mut labels: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
        match self.series.get(metric) {
            Some(seen) if !seen.is_empty() => labels.extend(seen.iter().cloned()),
            Some(_) => labels.extend(self.all_labels.iter().cloned()),
            None => {}
        }
        labels
    }
}

/// `name{a="x",b="y, \"z\""} 1` → (`name`, [`a`, `b`]).
fn sample_labels(line: &str) -> (String, Vec<String>) {
    let Some((name, rest)) = line.split_once('{') else {
        return (line.split(' ').next().unwrap().to_owned(), Vec::new());
    };
    let mut labels = Vec::new();
    let (mut key, mut in_value, mut escaped) = (String::new(), false, false);
    for c in rest.chars() {
        match (in_value, c) {
            (true, _) if escaped => escaped = false,
            (true, '\\') => escaped = true,
            (true, '"') => in_value = false,
            (true, _) => {}
            (false, '"') => {
                in_value = true;
                labels.push(std::mem::take(&mut key).trim_matches([',', '=']).to_owned());
            }
            (false, '}') => break,
            (false, c) => key.push(c),
        }
    }
    (name.to_owned(), labels)
}

/// Metrics an expression selects (with the labels its matchers name), and the labels it
/// groups or matches by.
#[derive(Default, Debug)]
struct Used {
    selectors: Vec<(String, Vec<String>)>,
    grouping: Vec<String>,
}

fn walk(e: &Expr, used: &mut Used) {
    let selector = |v: &VectorSelector, used: &mut Used| {
        let name = v.name.clone().unwrap_or_default();
        let labels = v.matchers.matchers.iter().map(|m| m.name.clone()).collect();
        used.selectors.push((name, labels));
    };
    match e {
        Expr::Aggregate(a) => {
            if let Some(m) = &a.modifier {
                used.grouping.extend(m.labels().labels.iter().cloned());
            }
            walk(&a.expr, used);
            if let Some(p) = &a.param {
                walk(p, used);
            }
        }
        Expr::Binary(b) => {
            if let Some(m) = b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                used.grouping.extend(m.labels().labels.iter().cloned());
            }
            walk(&b.lhs, used);
            walk(&b.rhs, used);
        }
        Expr::Unary(u) => walk(&u.expr, used),
        Expr::Paren(p) => walk(&p.expr, used),
        Expr::Subquery(s) => walk(&s.expr, used),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, used)),
        Expr::VectorSelector(v) => selector(v, used),
        Expr::MatrixSelector(m) => selector(&m.vs, used),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Every way one query can name what is not there.
fn problems(what: &str, expr: &str, template: &[String], exported: &Exported) -> Vec<String> {
    let parsed = match parser::parse(expr) {
        Ok(p) => p,
        Err(e) => return vec![format!("{what}: {expr}: {e}")],
    };
    let mut used = Used::default();
    walk(&parsed, &mut used);
    let mut found = Vec::new();
    let mut available: BTreeSet<String> = BTreeSet::new();
    for (metric, matchers) in &used.selectors {
        let own = PROMETHEUS_OWN.contains(&metric.as_str());
        if !own && !exported.series.contains_key(metric) {
            found.push(format!("{what}: no service exports {metric}"));
            continue;
        }
        let labels = exported.labels_of(metric);
        for l in matchers {
            if !labels.contains(l) {
                found.push(format!(
                    "{what}: {metric} has no label {l} (it has {labels:?})"
                ));
            }
        }
        available.extend(labels);
    }
    for l in used.grouping.iter().chain(template) {
        if !available.contains(l) {
            found.push(format!(
                "{what}: label {l} is on none of {:?}",
                used.selectors.iter().map(|s| &s.0).collect::<Vec<_>>()
            ));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_and_panel_names_metrics_and_labels_the_services_export() {
    let objects = tokio::task::spawn_blocking(rendered).await.unwrap();
    let mut p = Pipeline::start(Spec {
        backfill: 50,
        services: false,
        ..Spec::default()
    })
    .await;
    // A record Elasticsearch refuses (a dead letter) and a request the HTTP SIEM fails (a
    // delivery failure), so the failure metrics have samples and labels too.
    let refused = p.expected_row_ids()[3].clone();
    p.es.lock().unwrap().mapping_errors.insert(refused);
    p.http
        .lock()
        .unwrap()
        .fail_next
        .push_back((503, "busy".into()));
    for s in SERVICES {
        p.start_service(s).await;
    }
    // Until every stage has done its work once: polled, normalized, delivered, dead-lettered,
    // failed once, and judged the alarms.
    let wanted = [
        (
            "oprelay-fetcher",
            "oprelay_fetcher_last_success_timestamp_seconds{",
        ),
        ("oprelay-normalizer", "oprelay_normalizer_records_total{"),
        ("oprelay-forwarder", "oprelay_forwarder_dead_letters_total{"),
        ("oprelay-forwarder", "oprelay_forwarder_failures_total{"),
        ("oprelay-healthwatch", "oprelay_healthwatch_alarm_state{"),
    ];
    let scrapes = eventually(
        Duration::from_secs(90),
        "every stage's metrics, failures included",
        || async {
            let mut texts = HashMap::new();
            for s in SERVICES {
                texts.insert(s, p.scrape(s).await?);
            }
            wanted
                .iter()
                .all(|(s, m)| texts[s].contains(m))
                .then_some(texts)
        },
    )
    .await;
    let mut exported = Exported::default();
    for text in scrapes.values() {
        exported.add(text);
    }
    let all: Vec<String> = queries(&objects)
        .iter()
        .flat_map(|(what, expr, template)| problems(what, expr, template, &exported))
        .collect();
    assert!(
        all.is_empty(),
        "{}\n\nwhat the services export:\n{}",
        all.join("\n"),
        scrapes.values().cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn a_query_naming_what_no_service_exports_is_caught() {
    // The check itself: a made-up metric, a label the metric lacks, and a legend label that
    // the grouping dropped are each reported.
    let mut exported = Exported::default();
    exported.add(
        "# TYPE oprelay_forwarder_records counter\n\
         oprelay_forwarder_records_total{sink=\"elastic\"} 5\n",
    );
    assert!(problems(
        "ok",
        "sum by (sink) (rate(oprelay_forwarder_records_total[5m]))",
        &["sink".into()],
        &exported
    )
    .is_empty());
    assert_eq!(
        problems(
            "x",
            "rate(oprelay_forwarder_record_total[5m])",
            &[],
            &exported
        )
        .len(),
        1
    );
    assert_eq!(
        problems(
            "x",
            "oprelay_forwarder_records_total{feed=\"a\"}",
            &[],
            &exported
        )
        .len(),
        1
    );
    assert_eq!(
        problems(
            "x",
            "sum by (account) (oprelay_forwarder_records_total)",
            &[],
            &exported
        )
        .len(),
        1
    );
    assert_eq!(
        problems(
            "x",
            "sum (oprelay_forwarder_records_total)",
            &["feed".into()],
            &exported
        )
        .len(),
        1
    );
    assert!(problems("x", "up{job=~\".+/nats\"} == 0", &["pod".into()], &exported).is_empty());
    assert_eq!(
        sample_labels("m{a=\"x,y\",b=\"q\\\"}\"} 1"),
        ("m".to_owned(), vec!["a".to_owned(), "b".to_owned()])
    );
}
