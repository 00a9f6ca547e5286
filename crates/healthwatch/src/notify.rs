//! Where alarms go besides `op.alarms.…`: a generic webhook (the alarm as JSON) and Slack
//! incoming webhooks (readable text). Delivery is retried with backoff in its own task, so a
//! dead webhook never delays evaluation, and what was delivered is recorded in `OP_HEALTH`,
//! so a restart neither repeats nor forgets a notification.

use std::time::Duration;

use serde_json::json;

use oprelay_events::AlarmState;
use oprelay_service::config::{NotifyConfig, NotifyType};

use crate::alarm::AlarmRecord;

/// Why a notifier could not be set up, or a notification not delivered. Never carries the
/// URL: Slack's and many webhooks' URLs are secrets.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Its configuration cannot be used (a `url_file` that cannot be read, a bad URL).
    #[error(transparent)]
    Config(#[from] oprelay_service::ConfigError),
    /// The HTTP client could not be built.
    #[error("notify[{index}]: {source}")]
    Client {
        /// Which notifier.
        index: usize,
        /// Why.
        source: reqwest::Error,
    },
    /// The endpoint could not be reached.
    #[error("{name}: {source}")]
    Unreachable {
        /// The notifier (`webhook-0`, …).
        name: String,
        /// Why, without the URL.
        source: reqwest::Error,
    },
    /// The endpoint answered with something other than success.
    #[error("{name}: HTTP {status}")]
    Refused {
        /// The notifier.
        name: String,
        /// Its answer.
        status: reqwest::StatusCode,
    },
}

/// One configured destination of notifications.
pub struct Notifier {
    /// Stable name under which deliveries are recorded: `webhook-0`, `slack-1`, …
    pub name: String,
    kind: NotifyType,
    url: String,
    http: reqwest::Client,
}

impl Notifier {
    /// The notifier of `healthwatch.notify[index]`; reads `url_file` now.
    pub fn new(index: usize, config: &NotifyConfig) -> Result<Notifier, NotifyError> {
        let kind = config.kind;
        let prefix = match kind {
            NotifyType::Webhook => "webhook",
            NotifyType::Slack => "slack",
        };
        Ok(Notifier {
            name: format!("{prefix}-{index}"),
            kind,
            url: config.endpoint(&format!("healthwatch.notify[{index}]"))?,
            // A redirect would turn the POST into a bodiless GET and its 200 would count as
            // notified; follow none, so a moved webhook shows as a failing one.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(15))
                .build()
                .map_err(|source| NotifyError::Client { index, source })?,
        })
    }

    fn body(
        &self,
        record: &AlarmRecord,
        what: AlarmState,
        now: time::OffsetDateTime,
    ) -> serde_json::Value {
        match self.kind {
            NotifyType::Webhook => {
                let mut v = serde_json::to_value(&record.alarm).unwrap_or_default();
                v["notification"] = json!(if what == AlarmState::Alarm {
                    "ALARM"
                } else {
                    "RESOLVED"
                });
                v
            }
            NotifyType::Slack => {
                let scope = match record.alarm.feed {
                    Some(f) => format!("{} / {f}", record.alarm.account),
                    None => record.alarm.account.clone(),
                };
                let quiet = record
                    .alarm
                    .last_event_at
                    .map(|t| format!(" Last event arrived {} min ago.", (now - t).whole_minutes()))
                    .unwrap_or_default();
                let text = if what == AlarmState::Alarm {
                    format!(":rotating_light: *oprelay {}* on *{scope}*: {}.{quiet}\n*What to check:* {}", record.alarm.kind, record.alarm.message, record.alarm.runbook)
                } else {
                    format!(
                        ":white_check_mark: *oprelay {}* on *{scope}* resolved: {}.",
                        record.alarm.kind, record.alarm.message
                    )
                };
                json!({"text": text})
            }
        }
    }

    /// One attempt. Errors name the endpoint's answer, never a secret (URLs with tokens in
    /// their path are not printed).
    pub async fn send(
        &self,
        record: &AlarmRecord,
        what: AlarmState,
        now: time::OffsetDateTime,
    ) -> Result<(), NotifyError> {
        let resp = self
            .http
            .post(&self.url)
            .json(&self.body(record, what, now))
            .send()
            .await
            .map_err(|e| NotifyError::Unreachable {
                name: self.name.clone(),
                source: e.without_url(),
            })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(NotifyError::Refused {
                name: self.name.clone(),
                status: resp.status(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oprelay_events::{AccountName, AlarmKind, AlarmScope, Feed};

    fn record() -> (AlarmRecord, time::OffsetDateTime) {
        let t0 = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let scope = AlarmScope::Feed {
            account: AccountName::new("acme").unwrap(),
            feed: Feed::ItemUsages,
        };
        let mut r = AlarmRecord::new(AlarmKind::Dropoff, &scope, t0);
        r.apply(
            crate::alarm::Observation {
                state: AlarmState::Alarm,
                message: "acme/item_usages: no events for 25 h (threshold 24 h)".into(),
                last_event_at: Some(t0),
            },
            t0 + time::Duration::hours(25),
        );
        (r, t0 + time::Duration::hours(25))
    }

    #[test]
    fn slack_text_says_which_feed_how_long_and_what_to_check() {
        let n = Notifier::new(
            0,
            &NotifyConfig {
                kind: NotifyType::Slack,
                url: Some("https://hooks.slack.example/x".into()),
                url_file: None,
            },
        )
        .unwrap();
        assert_eq!(n.name, "slack-0");
        let (r, now) = record();
        let text = n.body(&r, AlarmState::Alarm, now)["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(text.contains("acme / item_usages"), "{text}");
        assert!(text.contains("Last event arrived 1500 min ago"), "{text}");
        assert!(
            text.contains("What to check:") && text.contains("oprelay status"),
            "{text}"
        );
        let resolved = n.body(&r, AlarmState::Ok, now)["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(resolved.contains("resolved"), "{resolved}");
    }

    #[test]
    fn a_secret_webhook_url_comes_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slack-url");
        std::fs::write(&path, "https://hooks.slack.example/T0/B0/secret\n").unwrap();
        let from_file = |url_file| NotifyConfig {
            kind: NotifyType::Slack,
            url: None,
            url_file: Some(url_file),
        };
        let n = Notifier::new(0, &from_file(path)).unwrap();
        assert_eq!(n.url, "https://hooks.slack.example/T0/B0/secret");
        let err = Notifier::new(0, &from_file(dir.path().join("missing")))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("healthwatch.notify[0].url_file"),
            "{err}"
        );
    }

    #[test]
    fn webhook_body_is_the_alarm_and_the_notification() {
        let n = Notifier::new(
            1,
            &NotifyConfig {
                kind: NotifyType::Webhook,
                url: Some("https://hooks.example/x".into()),
                url_file: None,
            },
        )
        .unwrap();
        let (r, now) = record();
        let v = n.body(&r, AlarmState::Alarm, now);
        assert_eq!(v["notification"], "ALARM");
        assert_eq!(v["kind"], "dropoff");
        assert_eq!(v["state"], "ALARM");
        assert_eq!(v["feed"], "item_usages");
        assert!(v["runbook"].as_str().unwrap().contains("oprelay status"));
    }
}
