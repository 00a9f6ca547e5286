//! What a service does at start instead of provisioning: check that what it uses exists and
//! matches the configuration, and fetch the consumers it reads.

use async_nats::jetstream::{self, consumer};

use super::{
    consumer_changes, consumer_config, provision_error, stream_config, ConsumerState, Need,
};
use crate::error::BusError;
use crate::topology::Topology;

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
