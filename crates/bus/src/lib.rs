//! NATS JetStream for oprelay: connect, provision the topology idempotently, publish with a
//! dedup id and W3C trace context and wait for the JetStream ack, and read and write JSON in KV
//! buckets with compare-and-set.

#![warn(missing_docs)]

pub mod access;
pub mod backoff;
mod connect;
mod error;
mod provision;
mod topology;
pub mod trace;

use async_nats::jetstream::{self, kv};
use async_nats::HeaderMap;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use oprelay_events::names::header;

pub use async_nats;
pub use backoff::{Backoff, Jitter, Retries};
pub use connect::{connect, install_crypto_provider, redact_url, NatsSettings};
pub use error::BusError;
pub use provision::{check, provision, pull_consumer, Action, Mode, Need, Step};
pub use topology::{ConsumerSpec, Topology};

/// A message for a JetStream stream. `msg_id` becomes `Nats-Msg-Id`: publish the same id twice
/// within the stream's duplicate window and the second is dropped by the server.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// Where it goes.
    pub subject: String,
    /// Its dedup id (`Nats-Msg-Id`).
    pub msg_id: String,
    /// Headers besides the dedup id and trace context, which `publish` adds.
    pub headers: HeaderMap,
    /// The body.
    pub payload: Bytes,
}

impl Outgoing {
    /// A message with no headers yet.
    pub fn new(
        subject: impl Into<String>,
        msg_id: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Self {
        Outgoing {
            subject: subject.into(),
            msg_id: msg_id.into(),
            headers: HeaderMap::new(),
            payload: payload.into(),
        }
    }

    /// The message with one more header.
    pub fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.insert(name, value.to_string());
        self
    }
}

/// Reads a header by name from a received message.
///
/// async-nats parses well-known names (`Nats-Msg-Id`, …) into typed keys that a plain `&str`
/// lookup does not find, so every read goes through the parsed name.
pub fn header_value<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    let name: async_nats::header::HeaderName = name.parse().ok()?;
    headers?.get(name).map(|v| v.as_str())
}

/// What JetStream said about a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The stream sequence it was stored under (or was stored under before, for a duplicate).
    pub sequence: u64,
    /// The server already had this `Nats-Msg-Id` and stored nothing.
    pub duplicate: bool,
}

/// A value read from a KV bucket with the revision to compare-and-set against.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// The revision it was stored under.
    pub revision: u64,
}

/// A connection to NATS and its JetStream context. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Bus {
    /// Connects (see [`connect`]) and opens JetStream.
    pub async fn connect(settings: &NatsSettings) -> Result<Bus, BusError> {
        Ok(Bus::from_client(connect(settings).await?))
    }

    /// A bus over a client connected elsewhere.
    pub fn from_client(client: async_nats::Client) -> Bus {
        let js = jetstream::new(client.clone());
        Bus { client, js }
    }

    /// The NATS client, for core NATS (flushes, server info).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context, for streams and consumers.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The largest body one message may carry: the server's `max_payload` (1 MiB by default)
    /// minus room for headers. Pages bigger than this are split by their producers.
    pub fn max_body(&self) -> usize {
        let max = match self.client.server_info().max_payload {
            0 => 1024 * 1024,
            m => m,
        };
        max - (16 * 1024).min(max / 4)
    }

    /// Whether the client is connected now (it reconnects on its own when not).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Creates and updates whatever differs from `topology`, holding back what would delete
    /// data (see [`Mode`]).
    pub async fn provision(&self, topology: &Topology) -> Result<Vec<Step>, BusError> {
        provision(&self.js, topology, Mode::Apply).await
    }

    /// Fails, listing every problem, unless what `needs` names exists as `topology` says.
    pub async fn check(&self, topology: &Topology, needs: &[Need]) -> Result<(), BusError> {
        check(&self.js, topology, needs).await
    }

    /// Publishes and waits for the JetStream ack, in a producer span (OpenTelemetry's
    /// messaging conventions) whose context goes out in `traceparent`, so a consumer's span
    /// hangs off this publish.
    pub async fn publish(&self, msg: Outgoing) -> Result<Published, BusError> {
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("publish {}", msg.subject),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = %msg.subject,
            messaging.message.id = %msg.msg_id,
            messaging.message.body.size = msg.payload.len(),
        );
        self.publish_in(msg, &span).instrument(span.clone()).await
    }

    async fn publish_in(&self, msg: Outgoing, span: &tracing::Span) -> Result<Published, BusError> {
        let Outgoing {
            subject,
            msg_id,
            mut headers,
            payload,
        } = msg;
        trace::inject(
            &tracing_opentelemetry::OpenTelemetrySpanExt::context(span),
            &mut headers,
        );
        headers.insert(header::MSG_ID, msg_id);
        let publish = jetstream::message::PublishMessage::build()
            .headers(headers)
            .payload(payload);
        let err = |e: Box<dyn std::error::Error + Send + Sync>| BusError::Publish {
            subject: subject.clone(),
            source: e,
        };
        let ack = self
            .js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| err(Box::new(e)))?
            .await
            .map_err(|e| err(Box::new(e)))?;
        Ok(Published {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Opens KV bucket `bucket`.
    pub async fn kv(&self, bucket: &str) -> Result<kv::Store, BusError> {
        self.js
            .get_key_value(bucket)
            .await
            .map_err(|e| BusError::Kv {
                op: "open",
                bucket: bucket.to_owned(),
                key: String::new(),
                source: Box::new(e),
            })
    }
}

/// JSON values in a KV bucket, with compare-and-set writes.
#[derive(Clone)]
pub struct JsonKv {
    store: kv::Store,
    bucket: String,
}

impl JsonKv {
    /// Opens KV bucket `bucket` for JSON values.
    pub async fn open(bus: &Bus, bucket: &str) -> Result<JsonKv, BusError> {
        Ok(JsonKv {
            store: bus.kv(bucket).await?,
            bucket: bucket.to_owned(),
        })
    }

    /// The underlying store, for listing keys and watching.
    pub fn store(&self) -> &kv::Store {
        &self.store
    }

    fn kv_err(
        &self,
        op: &'static str,
        key: &str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> BusError {
        BusError::Kv {
            op,
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            source: Box::new(e),
        }
    }

    /// The current value, or `None` when the key was never written or was deleted.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, BusError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| self.kv_err("read", key, e))?;
        let Some(entry) = entry else { return Ok(None) };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let value = serde_json::from_slice(&entry.value).map_err(|source| BusError::Decode {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            source,
        })?;
        Ok(Some(Versioned {
            value,
            revision: entry.revision,
        }))
    }

    /// Writes `value` only if the key is still at `revision` (`None`: only if it does not
    /// exist). Returns the new revision, or [`BusError::Conflict`] when someone wrote first.
    pub async fn compare_and_set<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        revision: Option<u64>,
    ) -> Result<u64, BusError> {
        let bytes =
            Bytes::from(serde_json::to_vec(value).map_err(|e| self.kv_err("encode", key, e))?);
        let conflict = || BusError::Conflict {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
        };
        match revision {
            Some(rev) => self.store.update(key, bytes, rev).await.map_err(|e| {
                if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                    conflict()
                } else {
                    self.kv_err("update", key, e)
                }
            }),
            None => self.store.create(key, bytes).await.map_err(|e| {
                if e.kind() == kv::CreateErrorKind::AlreadyExists {
                    conflict()
                } else {
                    self.kv_err("create", key, e)
                }
            }),
        }
    }

    /// Writes unconditionally (status rows, lookups: last writer wins by design).
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<u64, BusError> {
        let bytes =
            Bytes::from(serde_json::to_vec(value).map_err(|e| self.kv_err("encode", key, e))?);
        self.store
            .put(key, bytes)
            .await
            .map_err(|e| self.kv_err("write", key, e))
    }
}
