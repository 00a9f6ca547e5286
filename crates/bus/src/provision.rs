//! Bringing the server in line with the [`Topology`]: create what is missing, update what
//! differs, and never delete data without being told to.
//!
//! Provisioning is an operator's step (`oprelay nats provision`, `--dry-run` to see the plan):
//! the services only [`check`] that what they use is there, so a service started with a
//! non-production config cannot rewrite production's streams, and the services' NATS users
//! need no right to create or change anything. Creating something that exists with the same
//! settings is a no-op on the server, so two provisioners racing is harmless.
//!
//! What counts as deleting data: a shorter `max_age`, a smaller `max_bytes` or a shorter KV
//! history. Those are held back and reported unless the mode is [`Mode::ApplyAndShrink`].
//! Everything else (subjects, duplicate window, replica count, consumer settings) is applied
//! in place; a consumer keeps its position when updated.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, consumer, stream};

use crate::error::BusError;
use crate::topology::{ConsumerSpec, Topology};

/// What to do with the differences found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Report only.
    DryRun,
    /// Create and update; hold back changes that would delete data.
    Apply,
    /// Apply everything, including shorter retention.
    ApplyAndShrink,
}

/// What provisioning did (or, in a dry run, would do) to one stream, bucket or consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// `stream OP_RAW`, `bucket OP_CURSORS`, `consumer normalizer on OP_RAW`.
    pub object: String,
    /// What happened to it.
    pub action: Action,
    /// The differences applied (or to apply), in words: `replicas 1 → 3`.
    pub changes: Vec<String>,
    /// Differences that would delete data and were not applied.
    pub held_back: Vec<String>,
}

/// What provisioning does to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// It did not exist.
    Create,
    /// It differed from the configuration.
    Update,
    /// It is as configured.
    Unchanged,
}

impl Step {
    fn new(object: String, action: Action) -> Step {
        Step {
            object,
            action,
            changes: Vec::new(),
            held_back: Vec::new(),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Action::Create => write!(f, "create {}", self.object)?,
            Action::Update => write!(f, "update {}: {}", self.object, self.changes.join("; "))?,
            Action::Unchanged => write!(f, "{} is up to date", self.object)?,
        }
        if !self.held_back.is_empty() {
            write!(
                f,
                "\n  held back, it would delete data: {}\n  (run `oprelay nats provision --shrink-retention` to apply)",
                self.held_back.join("; ")
            )?;
        }
        Ok(())
    }
}

/// Something a service uses, for [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// A stream, by name.
    Stream(&'static str),
    /// A KV bucket, by name.
    Bucket(&'static str),
    /// A durable consumer of the topology, by name; checked against its configuration too.
    Consumer(String),
}

fn provision_error(
    what: String,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> BusError {
    move |source| BusError::Provision { what, source }
}

/// Compares the server with `topology` and, unless `mode` is a dry run, applies the
/// difference. Returns one step per stream, bucket and consumer, in that order.
pub async fn provision(
    js: &jetstream::Context,
    topology: &Topology,
    mode: Mode,
) -> Result<Vec<Step>, BusError> {
    let mut steps = Vec::new();
    for wanted in topology.streams() {
        steps.push(reconcile_stream(js, wanted, mode).await?);
    }
    for bucket in topology.buckets() {
        steps.push(reconcile_bucket(js, bucket, mode).await?);
    }
    for spec in &topology.consumers {
        steps.push(reconcile_consumer(js, topology, spec, mode).await?);
    }
    Ok(steps)
}

/// The server's config of `stream`, or `None` when it does not exist.
async fn stream_config(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Config>, BusError> {
    match js.get_stream(name).await {
        Ok(mut s) => match s.info().await {
            Ok(info) => Ok(Some(info.config.clone())),
            Err(e) => Err(provision_error(format!("stream {name}"))(Box::new(e))),
        },
        // "Stream not found" is an answer; anything else (permissions, timeouts) is a
        // failure to look.
        Err(e)
            if matches!(
                e.kind(),
                GetStreamErrorKind::JetStream(ref js_err)
                    if js_err.error_code() == ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(provision_error(format!("stream {name}"))(Box::new(e))),
    }
}

/// The differences between a stream's stored limits and the wanted ones, split into what is
/// safe to apply and what would delete data. `target` is `have` with the safe changes (and,
/// if `shrink`, the others) applied.
struct Diff {
    target: stream::Config,
    changes: Vec<String>,
    shrinks: Vec<String>,
}

/// `0` (age) and `-1` (bytes, messages) mean "no limit" to JetStream.
fn age_limit(d: Duration) -> Duration {
    if d.is_zero() {
        Duration::MAX
    } else {
        d
    }
}

fn count_limit(n: i64) -> i64 {
    if n < 0 {
        i64::MAX
    } else {
        n
    }
}

fn shown_bytes(n: i64) -> String {
    if n < 0 {
        "unlimited".to_owned()
    } else {
        n.to_string()
    }
}

fn diff_limits(have: &stream::Config, want: &stream::Config, shrink: bool) -> Diff {
    let mut d = Diff {
        target: have.clone(),
        changes: Vec::new(),
        shrinks: Vec::new(),
    };
    if have.subjects != want.subjects {
        d.changes.push(format!(
            "subjects {} → {}",
            have.subjects.join(","),
            want.subjects.join(",")
        ));
        d.target.subjects = want.subjects.clone();
    }
    if have.num_replicas != want.num_replicas {
        d.changes.push(format!(
            "replicas {} → {}",
            have.num_replicas, want.num_replicas
        ));
        d.target.num_replicas = want.num_replicas;
    }
    if have.duplicate_window != want.duplicate_window {
        d.changes.push(format!(
            "duplicate_window {:?} → {:?}",
            have.duplicate_window, want.duplicate_window
        ));
        d.target.duplicate_window = want.duplicate_window;
    }
    let mut limit = |text: String, shrinks: bool, apply: &mut dyn FnMut(&mut stream::Config)| {
        if shrinks && !shrink {
            d.shrinks.push(text);
        } else {
            apply(&mut d.target);
            if shrinks {
                d.shrinks.push(text.clone());
            }
            d.changes.push(text);
        }
    };
    if have.max_age != want.max_age {
        let text = format!("max_age {:?} → {:?}", have.max_age, want.max_age);
        let shrinks = age_limit(want.max_age) < age_limit(have.max_age);
        limit(text, shrinks, &mut |t| t.max_age = want.max_age);
    }
    if have.max_bytes != want.max_bytes {
        let text = format!(
            "max_bytes {} → {}",
            shown_bytes(have.max_bytes),
            shown_bytes(want.max_bytes)
        );
        let shrinks = count_limit(want.max_bytes) < count_limit(have.max_bytes);
        limit(text, shrinks, &mut |t| t.max_bytes = want.max_bytes);
    }
    if have.max_messages_per_subject != want.max_messages_per_subject {
        let text = format!(
            "history {} → {}",
            have.max_messages_per_subject, want.max_messages_per_subject
        );
        let shrinks =
            count_limit(want.max_messages_per_subject) < count_limit(have.max_messages_per_subject);
        limit(text, shrinks, &mut |t| {
            t.max_messages_per_subject = want.max_messages_per_subject
        });
    }
    d
}

/// Applies a diff to an existing stream and turns it into a step.
async fn apply_diff(
    js: &jetstream::Context,
    object: String,
    diff: Diff,
    mode: Mode,
) -> Result<Step, BusError> {
    let shrink = mode == Mode::ApplyAndShrink;
    let mut step = Step::new(object, Action::Unchanged);
    if !diff.changes.is_empty() {
        step.action = Action::Update;
        step.changes = diff.changes;
        if mode != Mode::DryRun {
            tracing::info!(object = %step.object, changes = %step.changes.join("; "), "updating to match the configuration");
            js.update_stream(diff.target)
                .await
                .map_err(|e| provision_error(format!("update of {}", step.object))(Box::new(e)))?;
        }
    }
    if !shrink {
        step.held_back = diff.shrinks;
        if !step.held_back.is_empty() {
            tracing::warn!(object = %step.object, held_back = %step.held_back.join("; "), "not applying a change that would delete data; run `oprelay nats provision --shrink-retention`");
        }
    }
    Ok(step)
}

async fn reconcile_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
    mode: Mode,
) -> Result<Step, BusError> {
    let object = format!("stream {}", wanted.name);
    match stream_config(js, &wanted.name).await? {
        None => {
            if mode != Mode::DryRun {
                // Another provisioner may create it first; the same settings make that a no-op.
                js.get_or_create_stream(wanted)
                    .await
                    .map_err(|e| provision_error(object.clone())(Box::new(e)))?;
            }
            Ok(Step::new(object, Action::Create))
        }
        Some(have) => {
            // A stream's description is informational; a retention or size limit of the
            // wanted config is only compared where oprelay sets one.
            let diff = diff_limits(&have, &wanted, mode == Mode::ApplyAndShrink);
            apply_diff(js, object, diff, mode).await
        }
    }
}

async fn reconcile_bucket(
    js: &jetstream::Context,
    wanted: async_nats::jetstream::kv::Config,
    mode: Mode,
) -> Result<Step, BusError> {
    let object = format!("bucket {}", wanted.bucket);
    let stream_name = format!("KV_{}", wanted.bucket);
    match stream_config(js, &stream_name).await? {
        None => {
            if mode != Mode::DryRun {
                let name = wanted.bucket.clone();
                if let Err(create_err) = js.create_key_value(wanted).await {
                    // Another provisioner may have created it between our look and our create.
                    js.get_key_value(&name)
                        .await
                        .map_err(|_| provision_error(object.clone())(Box::new(create_err)))?;
                }
            }
            Ok(Step::new(object, Action::Create))
        }
        Some(have) => {
            // A bucket is a stream the client library shapes; only what oprelay chooses
            // (replicas, history) is compared, the rest is left as the library made it.
            let want = stream::Config {
                num_replicas: wanted.num_replicas,
                max_messages_per_subject: wanted.history,
                ..have.clone()
            };
            let diff = diff_limits(&have, &want, mode == Mode::ApplyAndShrink);
            apply_diff(js, object, diff, mode).await
        }
    }
}

async fn reconcile_consumer(
    js: &jetstream::Context,
    topology: &Topology,
    spec: &ConsumerSpec,
    mode: Mode,
) -> Result<Step, BusError> {
    let object = format!("consumer {} on {}", spec.durable, spec.stream);
    let wanted = topology.consumer(spec);
    let have = match consumer_config(js, spec).await? {
        ConsumerState::Missing | ConsumerState::NoStream => None,
        ConsumerState::Present(c) => Some(*c),
    };
    let Some(have) = have else {
        if mode != Mode::DryRun {
            let stream = js
                .get_stream(&spec.stream)
                .await
                .map_err(|e| provision_error(object.clone())(Box::new(e)))?;
            stream
                .create_consumer(wanted)
                .await
                .map_err(|e| provision_error(object.clone())(Box::new(e)))?;
        }
        return Ok(Step::new(object, Action::Create));
    };
    let changes = consumer_changes(&have, &wanted);
    if changes.is_empty() {
        return Ok(Step::new(object, Action::Unchanged));
    }
    if mode != Mode::DryRun {
        tracing::warn!(%object, changes = %changes.join("; "), "updating the consumer to match the configuration");
        let stream = js
            .get_stream(&spec.stream)
            .await
            .map_err(|e| provision_error(object.clone())(Box::new(e)))?;
        stream
            .update_consumer(wanted)
            .await
            .map_err(|e| provision_error(format!("update of {object}"))(Box::new(e)))?;
    }
    let mut step = Step::new(object, Action::Update);
    step.changes = changes;
    Ok(step)
}

enum ConsumerState {
    NoStream,
    Missing,
    Present(Box<consumer::Config>),
}

async fn consumer_config(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> Result<ConsumerState, BusError> {
    let what = || format!("consumer {} on {}", spec.durable, spec.stream);
    if stream_config(js, &spec.stream).await?.is_none() {
        return Ok(ConsumerState::NoStream);
    }
    let stream = js
        .get_stream(&spec.stream)
        .await
        .map_err(|e| provision_error(what())(Box::new(e)))?;
    match stream.consumer_info(&spec.durable).await {
        Ok(info) => Ok(ConsumerState::Present(Box::new(info.config))),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(ConsumerState::Missing),
        Err(e) => Err(provision_error(what())(Box::new(e))),
    }
}

/// What differs between a consumer's stored config and the wanted one, in words.
fn consumer_changes(have: &consumer::Config, want: &consumer::pull::Config) -> Vec<String> {
    let mut out = Vec::new();
    let shown = |one: &str, many: &[String]| {
        if !many.is_empty() {
            many.join(", ")
        } else if one.is_empty() {
            "(every subject)".to_owned()
        } else {
            one.to_owned()
        }
    };
    if have.filter_subject != want.filter_subject || have.filter_subjects != want.filter_subjects {
        out.push(format!(
            "filter {} → {}",
            shown(&have.filter_subject, &have.filter_subjects),
            shown(&want.filter_subject, &want.filter_subjects)
        ));
    }
    if have.ack_wait != want.ack_wait {
        out.push(format!(
            "ack_wait {:?} → {:?}",
            have.ack_wait, want.ack_wait
        ));
    }
    if have.max_deliver != want.max_deliver {
        out.push(format!(
            "max_deliver {} → {}",
            have.max_deliver, want.max_deliver
        ));
    }
    if have.max_ack_pending != want.max_ack_pending {
        out.push(format!(
            "max_ack_pending {} → {}",
            have.max_ack_pending, want.max_ack_pending
        ));
    }
    out
}

/// Checks that everything in `needs` exists and that each needed consumer matches its
/// configuration, without changing anything. A service calls this at start; the error lists
/// every problem and says what to run.
pub async fn check(
    js: &jetstream::Context,
    topology: &Topology,
    needs: &[Need],
) -> Result<(), BusError> {
    let mut problems = Vec::new();
    for need in needs {
        match need {
            Need::Stream(name) => {
                if stream_config(js, name).await?.is_none() {
                    problems.push(format!("stream {name} does not exist"));
                }
            }
            Need::Bucket(name) => {
                if stream_config(js, &format!("KV_{name}")).await?.is_none() {
                    problems.push(format!("bucket {name} does not exist"));
                }
            }
            Need::Consumer(durable) => {
                let Some(spec) = topology.consumers.iter().find(|c| &c.durable == durable) else {
                    problems.push(format!("consumer {durable} is not in the configuration"));
                    continue;
                };
                match consumer_config(js, spec).await? {
                    ConsumerState::NoStream => problems.push(format!(
                        "consumer {durable} on {} does not exist (nor its stream)",
                        spec.stream
                    )),
                    ConsumerState::Missing => problems.push(format!(
                        "consumer {durable} on {} does not exist",
                        spec.stream
                    )),
                    ConsumerState::Present(have) => {
                        let changes = consumer_changes(&have, &topology.consumer(spec));
                        if !changes.is_empty() {
                            problems.push(format!(
                                "consumer {durable} on {} differs from the configuration ({})",
                                spec.stream,
                                changes.join("; ")
                            ));
                        }
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BusError::NotProvisioned { problems })
    }
}

/// Fetches the current handle of a consumer [`check`] found, for consuming.
pub async fn pull_consumer(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
) -> Result<consumer::PullConsumer, BusError> {
    let what = || format!("consumer {durable} on {stream}");
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| provision_error(what())(Box::new(e)))?;
    stream
        .get_consumer(durable)
        .await
        .map_err(provision_error(what()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(max_age_h: u64, max_bytes: i64, replicas: usize) -> stream::Config {
        stream::Config {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            max_age: Duration::from_secs(max_age_h * 3600),
            max_bytes,
            num_replicas: replicas,
            ..Default::default()
        }
    }

    #[test]
    fn longer_retention_and_more_replicas_are_applied() {
        let d = diff_limits(&stream(24, -1, 1), &stream(48, -1, 3), false);
        assert_eq!(d.target.max_age, Duration::from_secs(48 * 3600));
        assert_eq!(d.target.num_replicas, 3);
        assert_eq!(d.changes.len(), 2, "{:?}", d.changes);
        assert!(d.shrinks.is_empty());
    }

    #[test]
    fn shorter_retention_is_held_back_unless_allowed() {
        let have = stream(48, -1, 1);
        let want = stream(24, 1 << 30, 1);
        let d = diff_limits(&have, &want, false);
        assert_eq!(d.target.max_age, have.max_age, "kept");
        assert_eq!(
            d.target.max_bytes, -1,
            "an unlimited stream gaining a limit shrinks"
        );
        assert_eq!(d.shrinks.len(), 2, "{:?}", d.shrinks);
        assert!(d.changes.is_empty());

        let d = diff_limits(&have, &want, true);
        assert_eq!(d.target.max_age, want.max_age);
        assert_eq!(d.target.max_bytes, 1 << 30);
        assert_eq!(d.changes.len(), 2);
    }

    #[test]
    fn unlimited_is_longer_than_any_limit() {
        let limited = stream(24, 100, 1);
        let unlimited = stream(0, -1, 1);
        assert!(diff_limits(&limited, &unlimited, false).shrinks.is_empty());
        assert_eq!(diff_limits(&unlimited, &limited, false).shrinks.len(), 2);
    }

    #[test]
    fn a_step_says_what_to_run_for_what_it_held_back() {
        let mut step = Step::new("stream OP_RAW".into(), Action::Unchanged);
        step.held_back = vec!["max_age 7d → 1h".into()];
        let text = step.to_string();
        assert!(text.contains("--shrink-retention"), "{text}");
        assert!(text.contains("max_age"), "{text}");
    }
}
