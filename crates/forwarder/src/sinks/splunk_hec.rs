//! Splunk HTTP Event Collector: `POST /services/collector/event`, events concatenated, and
//! optionally indexer acknowledgement — Splunk's "200" only means "looks valid"; with `ack`
//! the batch counts as delivered only when Splunk says it is indexed.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rand::Rng;

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::json;

use oprelay_events::Feed;
use oprelay_service::config::{SinkConfig, SplunkHecConfig};

use super::http_client::{classify, client_builder, send, Credentials};
use super::request_body::Pieces;
use super::{Outcome, SetupError, SinkError};
use oprelay_format::Record;

/// How often to ask whether an acknowledged request was indexed.
const ACK_POLL: Duration = Duration::from_millis(500);
/// Resends in a row after ack timeouts before the sink waits as for a configuration problem:
/// Splunk took every copy, so each resend is a likely duplicate.
const MAX_ACK_RESENDS: u32 = 3;

pub struct SplunkHec {
    client: reqwest::Client,
    endpoint: String,
    auth: Credentials,
    index: Option<String>,
    sourcetype: Option<String>,
    host: String,
    channel: Option<String>,
    gzip: bool,
    ack_timeout: Duration,
    /// Ack timeouts in a row, over every batch; a confirmed ack resets it.
    ack_timeouts: AtomicU32,
}

#[derive(Debug, Deserialize)]
struct HecReply {
    #[serde(default)]
    text: String,
    #[serde(default)]
    code: i64,
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(rename = "invalid-event-number")]
    invalid_event: Option<usize>,
}

#[derive(Deserialize)]
struct AckReply {
    acks: std::collections::HashMap<String, bool>,
}

fn random_channel() -> String {
    oprelay_events::uuid_text(rand::rng().random())
}

impl SplunkHec {
    pub fn new(config: &SinkConfig, hec: &SplunkHecConfig) -> Result<SplunkHec, SetupError> {
        let token = hec.token().ok_or(SetupError::Missing {
            kind: "splunk_hec",
            key: "token_file",
        })?;
        Ok(SplunkHec {
            // Cookies kept: a load balancer that is sticky by cookie sends the ack polls to the
            // indexer that took the batch.
            client: client_builder(config)?.cookie_store(true).build()?,
            endpoint: hec.endpoint.trim_end_matches('/').to_owned(),
            auth: Credentials::Splunk(token),
            index: hec.index.clone(),
            sourcetype: hec.sourcetype.clone(),
            host: std::env::var("HOSTNAME").unwrap_or_else(|_| "oprelay".into()),
            // One channel per sink instance, as Splunk's indexer acknowledgement needs.
            channel: hec.ack.then(random_channel),
            gzip: hec.gzip,
            ack_timeout: hec.ack_timeout.0,
            ack_timeouts: AtomicU32::new(0),
        })
    }

    fn headers(&self) -> Result<HeaderMap, SinkError> {
        let mut h = HeaderMap::new();
        self.auth.apply(&mut h)?;
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(c) = &self.channel {
            if let Ok(v) = HeaderValue::from_str(c) {
                h.insert("X-Splunk-Request-Channel", v);
            }
        }
        Ok(h)
    }

    /// `,"host":…,"source":…,"sourcetype":…[,"index":…]` for one account and feed.
    fn metadata(&self, account: &str, feed: Feed) -> String {
        let sourcetype = self
            .sourcetype
            .clone()
            .unwrap_or_else(|| format!("1password:{feed}"));
        let mut meta = json!({"host": self.host, "source": format!("oprelay:{account}"), "sourcetype": sourcetype});
        if let Some(i) = &self.index {
            meta["index"] = json!(i);
        }
        let mut out = String::new();
        for (k, v) in meta.as_object().into_iter().flatten() {
            out.push_str(&format!(",\"{k}\":{v}"));
        }
        out
    }

    /// The request for `records`: each record's own bytes (shared with the batch, not copied)
    /// inside its event envelope, `{"time":…,<metadata>,"event":` before and `}` after.
    fn body(&self, records: &[&Record]) -> Pieces {
        // A batch is nearly always one account and feed: render their metadata once.
        let mut metadata: HashMap<(&str, Feed), String> = HashMap::new();
        let mut body = Pieces::with_capacity(records.len() * 3);
        for r in records {
            let m = metadata
                .entry((r.account.as_str(), r.feed))
                .or_insert_with(|| self.metadata(&r.account, r.feed));
            // `time` is epoch seconds as a decimal number, to the microsecond.
            let nanos = r.event_time.unix_timestamp_nanos();
            body.push_written(|head| {
                let _ = write!(
                    head,
                    "{{\"time\":{}{}.{:06}{m},\"event\":",
                    if nanos < 0 { "-" } else { "" },
                    nanos.unsigned_abs() / 1_000_000_000,
                    nanos.unsigned_abs() % 1_000_000_000 / 1_000
                );
            });
            body.push(r.body.clone());
            body.push_static(b"}\n");
        }
        body
    }

    /// `oprelay config check --online`: an empty request with the token. HEC checks the token
    /// before the body, so a valid one is answered "No data" (400, code 5) and nothing is
    /// indexed; a refused token is 401/403 (codes 1–4).
    pub async fn healthcheck(&self) -> Result<String, SinkError> {
        let url = format!("{}/services/collector/event", self.endpoint);
        let (status, headers, body) = super::http_client::send(
            &self.client,
            &url,
            self.headers()?,
            Pieces::default(),
            false,
        )
        .await?;
        let reply: Option<HecReply> = serde_json::from_slice(&body).ok();
        match (status.as_u16(), reply) {
            (400, Some(r)) if r.code == 5 => Ok("HEC accepted the token".into()),
            (_, Some(r)) if (1..=4).contains(&r.code) => Err(SinkError::needs_operator(format!(
                "HEC refused the token: {} (code {})",
                r.text, r.code
            ))),
            _ => {
                super::http_client::classify(status, &headers, &body)?;
                Ok(format!("HEC answered {status}"))
            }
        }
    }

    pub async fn send(&self, records: &[&Record]) -> Result<Outcome, SinkError> {
        let body = self.body(records);
        let url = format!("{}/services/collector/event", self.endpoint);
        let (status, headers, bytes) =
            send(&self.client, &url, self.headers()?, body, self.gzip).await?;
        let reply = match judge(status, &headers, &bytes, records.len())? {
            Judged::Accepted(reply) => reply,
            Judged::Partial(outcome) => return Ok(outcome),
        };
        if let (Some(_), Some(ack_id)) = (&self.channel, reply.ack_id) {
            self.wait_indexed(ack_id).await?;
        } else if self.channel.is_some() {
            return Err(SinkError::needs_operator("ack = true but Splunk returned no ackId: enable indexer acknowledgement on the HEC token"));
        }
        Ok(Outcome::Delivered)
    }

    /// Polls `/services/collector/ack` until Splunk reports the request indexed. The records
    /// were accepted already, so a failing poll (a channel error, an indexer that does not
    /// know the id) is retried, never turned into a rejection of the records. Only the ack
    /// timeout sends the batch again, and only [`MAX_ACK_RESENDS`] times in a row.
    async fn wait_indexed(&self, ack_id: u64) -> Result<(), SinkError> {
        let url = format!("{}/services/collector/ack", self.endpoint);
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        loop {
            let body = json!({"acks": [ack_id]}).to_string().into_bytes();
            let last_problem =
                match send(&self.client, &url, self.headers()?, body.into(), false).await {
                    Ok((status, _, bytes)) if status.is_success() => {
                        match serde_json::from_slice::<AckReply>(&bytes) {
                            Ok(reply) if reply.acks.get(&ack_id.to_string()) == Some(&true) => {
                                self.ack_timeouts.store(0, Ordering::Relaxed);
                                return Ok(());
                            }
                            Ok(_) => "not indexed yet".to_owned(),
                            Err(e) => format!("the ack reply is not Splunk's: {e}"),
                        }
                    }
                    Ok((status, _, bytes)) => {
                        let problem = format!(
                            "HTTP {status}: {}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim()
                        );
                        tracing::warn!(ack_id, %problem, "Splunk ack poll failed; polling on");
                        problem
                    }
                    Err(e) => e.message,
                };
            if tokio::time::Instant::now() >= deadline {
                // "false" also means "lost": send again rather than assume, a few times.
                let n = self.ack_timeouts.fetch_add(1, Ordering::Relaxed) + 1;
                let message = format!(
                    "Splunk did not confirm indexing of ack {ack_id} within {:?} ({last_problem}); \
                     {n} ack timeout(s) in a row",
                    self.ack_timeout
                );
                let err = if n > MAX_ACK_RESENDS {
                    SinkError::needs_operator(format!(
                        "{message}: check indexer acknowledgement on the HEC token, and \
                         stickiness of any load balancer in front of the indexers"
                    ))
                } else {
                    SinkError::transient(message)
                };
                return Err(err.because("ack_timeout"));
            }
            tokio::time::sleep(ACK_POLL).await;
        }
    }
}

/// What a reply to `/services/collector/event` means.
#[derive(Debug)]
enum Judged {
    /// HEC took every event; its reply carries the ack id when acks are on.
    Accepted(HecReply),
    /// HEC named the one event it refused; the others are sent again.
    Partial(Outcome),
}

/// Judges HEC's reply to a request of `records` events: HEC's own error codes first (they say
/// whether the data, the configuration or the load is at fault), the HTTP status otherwise.
fn judge(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    bytes: &[u8],
    records: usize,
) -> Result<Judged, SinkError> {
    let reply: Option<HecReply> = serde_json::from_slice(bytes).ok();
    if !status.is_success() {
        if let Some(r) = &reply {
            let what = format!("Splunk HEC {status}, code {}: {}", r.code, r.text);
            match r.code {
                // Invalid data format / event field problems: that event is refused. Whether
                // HEC kept the events before it is not promised, so all the others are sent
                // again: a possible duplicate at Splunk rather than a possible loss.
                5 | 6 | 12 | 13 => {
                    if let Some(bad) = r.invalid_event.filter(|i| *i < records) {
                        return Ok(Judged::Partial(Outcome::Partial {
                            retry: (0..records).filter(|i| *i != bad).collect(),
                            rejected: vec![(bad, what)],
                        }));
                    }
                    return Err(SinkError::rejected(what));
                }
                // Disabled or invalid token, missing channel, wrong index, ack disabled:
                // the configuration is wrong, not the data.
                1..=4 | 7 | 10 | 11 | 14 => return Err(SinkError::needs_operator(what)),
                9 => return Err(SinkError::transient(what)),
                _ => {}
            }
        }
        classify(status, headers, bytes)?;
    }
    reply.map(Judged::Accepted).ok_or_else(|| {
        SinkError::transient("Splunk HEC answered 200 with a body that is not its JSON reply")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::ErrorKind;
    use bytes::Bytes;
    use reqwest::header::HeaderMap;
    use reqwest::StatusCode;

    fn reply(status: u16, body: &str, records: usize) -> Result<Judged, SinkError> {
        judge(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
            records,
        )
    }

    #[test]
    fn hec_codes_decide_before_the_status() {
        // Splunk's replies, as its documentation lists them.
        let ok = reply(200, r#"{"text":"Success","code":0,"ackId":7}"#, 3).unwrap();
        assert!(matches!(
            ok,
            Judged::Accepted(HecReply {
                ack_id: Some(7),
                ..
            })
        ));
        let bad_event = reply(
            400,
            r#"{"text":"Invalid data format","code":6,"invalid-event-number":1}"#,
            3,
        )
        .unwrap();
        let Judged::Partial(Outcome::Partial { retry, rejected }) = bad_event else {
            panic!("one event refused: {bad_event:?}")
        };
        assert_eq!(retry, vec![0, 2]);
        assert_eq!(rejected[0].0, 1);
        assert!(rejected[0].1.contains("code 6"));
        let token = reply(403, r#"{"text":"Invalid token","code":4}"#, 3).unwrap_err();
        assert_eq!(token.kind, ErrorKind::NeedsOperator);
        let busy = reply(503, r#"{"text":"Server is busy","code":9}"#, 3).unwrap_err();
        assert_eq!(busy.kind, ErrorKind::Transient);
        let no_number = reply(400, r#"{"text":"No data","code":5}"#, 3).unwrap_err();
        assert_eq!(no_number.kind, ErrorKind::Rejected);
    }

    fn record(account: &str, body: &str, nanos: i128) -> Record {
        Record {
            body: Bytes::from(body.to_owned()),
            row_id: "r".into(),
            log_type: Feed::ItemUsages.log_type(),
            event_time: time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap(),
            account: account.into(),
            feed: Feed::ItemUsages,
            parse_time: None,
            source: Bytes::new(),
        }
    }

    #[test]
    fn each_event_is_the_records_own_bytes_in_its_envelope() {
        let hec = SplunkHec {
            client: reqwest::Client::new(),
            endpoint: "https://splunk.example".into(),
            auth: Credentials::None,
            index: Some("security".into()),
            sourcetype: None,
            host: "pod-1".into(),
            channel: None,
            gzip: false,
            ack_timeout: Duration::from_secs(1),
            ack_timeouts: AtomicU32::new(0),
        };
        // Before the epoch too: HEC reads `time` as a decimal number, so -1.5 s is `-1.500000`.
        let records = [
            record("acme", r#"{"a":1}"#, 1_700_000_000_123_456_789),
            record("acme", r#"{"b":2}"#, -1_500_000_000),
            record("globex", r#"{"c":3}"#, 5),
        ];
        let refs: Vec<&Record> = records.iter().collect();
        let body = hec.body(&refs);
        let mut sent = Vec::new();
        body.write_to(&mut sent).unwrap();
        let meta = |account: &str| {
            format!(
                r#""host":"pod-1","index":"security","source":"oprelay:{account}","sourcetype":"1password:item_usages""#
            )
        };
        let expected = format!(
            "{{\"time\":1700000000.123456,{},\"event\":{{\"a\":1}}}}\n\
             {{\"time\":-1.500000,{},\"event\":{{\"b\":2}}}}\n\
             {{\"time\":0.000000,{},\"event\":{{\"c\":3}}}}\n",
            meta("acme"),
            meta("acme"),
            meta("globex")
        );
        assert_eq!(String::from_utf8(sent).unwrap(), expected);
        assert_eq!(
            body.len(),
            expected.len(),
            "the length the request announces"
        );
        for r in &records {
            assert!(
                body.pieces().iter().any(|p| p.as_ptr() == r.body.as_ptr()),
                "the record's bytes are sent as they are, not copied"
            );
        }
    }

    #[test]
    fn a_reply_that_is_not_hecs_falls_back_to_the_status() {
        let proxy = reply(502, "<html>Bad Gateway</html>", 3).unwrap_err();
        assert_eq!(proxy.kind, ErrorKind::Transient);
        let not_json = reply(200, "OK", 3).unwrap_err();
        assert_eq!(not_json.kind, ErrorKind::Transient);
        // An invalid-event-number past the request is not trusted to name a record.
        let odd = reply(
            400,
            r#"{"text":"Invalid data format","code":6,"invalid-event-number":9}"#,
            3,
        )
        .unwrap_err();
        assert_eq!(odd.kind, ErrorKind::Rejected);
    }
}
