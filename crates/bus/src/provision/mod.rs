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

use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, consumer, stream};

mod check;
mod diff;

pub use check::{check, pull_consumer};
use diff::{consumer_changes, diff_limits, Diff};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_says_what_to_run_for_what_it_held_back() {
        let mut step = Step::new("stream OP_RAW".into(), Action::Unchanged);
        step.held_back = vec!["max_age 7d → 1h".into()];
        let text = step.to_string();
        assert!(text.contains("--shrink-retention"), "{text}");
        assert!(text.contains("max_age"), "{text}");
    }
}
