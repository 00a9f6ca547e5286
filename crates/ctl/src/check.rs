//! `oprelay config check [--online]`: every problem in one run, as `vector validate` does.
//!
//! Offline it loads the config the way the services do (syntax, keys, ranges), then looks
//! for every file the config names (tokens, SIEM credentials, TLS material). Online it also
//! connects to NATS and compares the topology with what `oprelay nats provision` would make,
//! introspects each account's token at the Events API (one request per account, counted
//! against the token's rate limit like any other), and reaches each sink without delivering
//! anything. A problem in one place never hides the others.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use oprelay_bus::{Action, Bus, Mode};
use oprelay_forwarder::sinks::AnySink;
use oprelay_service::config::{self, Config, ConfigError};

/// How long any one online check may take.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(15);

/// What one check found.
pub struct Finding {
    pub what: String,
    pub result: Result<String, String>,
}

impl Finding {
    fn new(what: impl Into<String>, result: Result<String, String>) -> Self {
        Finding {
            what: what.into(),
            result,
        }
    }
}

fn problem(e: ConfigError) -> Finding {
    Finding::new(e.key.clone(), Err(e.problem.clone()))
}

/// Every offline problem: the config's own, then the files it names. The config comes back
/// only when it is valid (the online checks need one).
pub fn offline(path: Option<&Path>, nats_url: Option<&str>) -> (Option<Config>, Vec<Finding>) {
    let mut cfg = match config::parse(path) {
        Ok(cfg) => cfg,
        Err(problems) => return (None, problems.into_iter().map(problem).collect()),
    };
    if let Some(url) = nats_url {
        cfg.nats.url = url.to_owned();
    }
    let invalid = cfg.problems();
    let valid = invalid.is_empty();
    let findings = invalid
        .into_iter()
        .chain(cfg.token_problems())
        .chain(cfg.sink_file_problems())
        .map(problem)
        .collect();
    (valid.then_some(cfg), findings)
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(ONLINE_TIMEOUT, f)
        .await
        .map_err(|_| format!("{what}: no answer within {ONLINE_TIMEOUT:?}"))?
}

/// NATS reachable, and the topology what this config provisions.
async fn nats(cfg: &Config) -> Finding {
    let result = timed("NATS", async {
        let settings = cfg
            .nats_settings("oprelay-ctl")
            .map_err(|e| e.to_string())?;
        let bus = Bus::connect(&settings).await.map_err(|e| e.to_string())?;
        let steps = oprelay_bus::provision(bus.jetstream(), &cfg.topology(), Mode::DryRun)
            .await
            .map_err(|e| format!("reading the topology: {e}"))?;
        let pending: Vec<String> = steps
            .iter()
            .filter(|s| s.action != Action::Unchanged)
            .map(|s| s.to_string())
            .collect();
        if pending.is_empty() {
            Ok(format!(
                "connected; {} streams, buckets and consumers as provisioned",
                steps.len()
            ))
        } else {
            Err(format!(
                "connected, but the topology differs (run `oprelay nats provision`): {}",
                pending.join("; ")
            ))
        }
    })
    .await;
    Finding::new(
        format!("nats ({})", oprelay_bus::redact_url(&cfg.nats.url)),
        result,
    )
}

/// The token read, its claims decoded, and introspected at the host it names.
async fn token(a: &config::AccountConfig) -> Result<String, String> {
    let token = a.token().read().map_err(|e| e.to_string())?;
    let claims = oprelay_fetcher::token::decode(token.expose()).map_err(|e| e.to_string())?;
    let base_url = a
        .base_url
        .clone()
        .or(claims.base_url)
        .ok_or("the token names no Events API host; set base_url")?;
    let api = oprelay_fetcher::api::EventsApi::new(&base_url, a.api_version)
        .map_err(|e| e.to_string())?;
    let found = api.introspect(&token).await.map_err(|e| e.to_string())?;
    let expires = claims
        .expires_at
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(|t| format!(", expires {t}"))
        .unwrap_or_default();
    Ok(format!(
        "accepted by {base_url}: features {}{expires}",
        found.features.join(", ")
    ))
}

/// Every online check, each bounded in time.
pub async fn online(cfg: &Config) -> Vec<Finding> {
    let mut found = vec![nats(cfg).await];
    for (i, a) in cfg.accounts.iter().enumerate() {
        let result = timed("the Events API", token(a)).await;
        found.push(Finding::new(format!("accounts[{i}] ({})", a.name), result));
    }
    for (i, s) in cfg.sinks.iter().enumerate() {
        let result = match AnySink::build(s) {
            Err(e) => Err(e.source.to_string()),
            Ok(sink) => {
                let checked = timed(&s.name, async {
                    sink.healthcheck().await.map_err(|e| e.message)
                })
                .await;
                sink.close().await;
                checked
            }
        };
        found.push(Finding::new(format!("sinks[{i}] ({})", s.name), result));
    }
    found
}

/// Prints every finding, then the verdict; exit code 1 when anything failed.
pub fn report(cfg: Option<&Config>, findings: &[Finding], online: bool) -> ExitCode {
    let mut problems = 0;
    for f in findings {
        match &f.result {
            Ok(what) => println!("ok       {}: {what}", f.what),
            Err(why) => {
                problems += 1;
                println!("PROBLEM  {}: {why}", f.what);
            }
        }
    }
    match cfg {
        Some(cfg) if problems == 0 => {
            println!(
                "config OK{}: {} account(s), {} sink(s), NATS at {}",
                if online {
                    " (online checks passed)"
                } else {
                    ""
                },
                cfg.accounts.len(),
                cfg.sinks.len(),
                oprelay_bus::redact_url(&cfg.nats.url)
            );
            ExitCode::SUCCESS
        }
        _ => {
            println!("{problems} problem(s)");
            ExitCode::FAILURE
        }
    }
}
