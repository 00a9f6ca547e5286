//! Feeds, log types and account names: the vocabulary of subjects, keys and config.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One of the three event streams an account offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feed {
    /// `signin_attempts`: every attempt to sign in, successful or not.
    SignInAttempts,
    /// `item_usages`: every time an item in a shared vault was used.
    ItemUsages,
    /// `audit_events`: every change to the account, its members, vaults and groups.
    AuditEvents,
}

impl Feed {
    /// Every feed, in the order they are polled and listed.
    pub const ALL: [Feed; 3] = [Feed::SignInAttempts, Feed::ItemUsages, Feed::AuditEvents];

    /// The name in subjects, keys and config: `signin_attempts`, `item_usages`, `audit_events`.
    pub fn as_str(self) -> &'static str {
        match self {
            Feed::SignInAttempts => "signin_attempts",
            Feed::ItemUsages => "item_usages",
            Feed::AuditEvents => "audit_events",
        }
    }

    /// The endpoint name and the token feature that grants it (`1password.com/fts`).
    pub fn api_name(self) -> &'static str {
        match self {
            Feed::SignInAttempts => "signinattempts",
            Feed::ItemUsages => "itemusages",
            Feed::AuditEvents => "auditevents",
        }
    }

    /// The feed of an endpoint or token feature name.
    pub fn from_api_name(name: &str) -> Option<Feed> {
        Feed::ALL.into_iter().find(|f| f.api_name() == name)
    }

    /// The Panther log type of its records.
    pub fn log_type(self) -> LogType {
        match self {
            Feed::SignInAttempts => LogType::SignInAttempt,
            Feed::ItemUsages => LogType::ItemUsage,
            Feed::AuditEvents => LogType::AuditEvent,
        }
    }
}

impl fmt::Display for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A feed name that is none of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown feed `{0}` (expected signin_attempts, item_usages or audit_events)")]
pub struct UnknownFeed(pub String);

impl FromStr for Feed {
    type Err = UnknownFeed;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Feed::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownFeed(s.to_owned()))
    }
}

/// The feed names as a string enum (the type serializes by hand).
impl schemars::JsonSchema for Feed {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Feed".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": Feed::ALL.map(Feed::as_str),
        })
    }
}

impl Serialize for Feed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Feed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Panther's log type names, which rules and data-lake tables are keyed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogType {
    /// `OnePassword.SignInAttempt`.
    SignInAttempt,
    /// `OnePassword.ItemUsage`.
    ItemUsage,
    /// `OnePassword.AuditEvent`.
    AuditEvent,
}

impl LogType {
    /// Panther's name, the value of `p_log_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogType::SignInAttempt => "OnePassword.SignInAttempt",
            LogType::ItemUsage => "OnePassword.ItemUsage",
            LogType::AuditEvent => "OnePassword.AuditEvent",
        }
    }

    /// The feed whose records have this log type.
    pub fn feed(self) -> Feed {
        match self {
            LogType::SignInAttempt => Feed::SignInAttempts,
            LogType::ItemUsage => Feed::ItemUsages,
            LogType::AuditEvent => Feed::AuditEvents,
        }
    }
}

impl fmt::Display for LogType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LogType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        [
            LogType::SignInAttempt,
            LogType::ItemUsage,
            LogType::AuditEvent,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown log type `{s}`")))
    }
}

/// A configured account's name. It becomes a NATS subject token and part of KV keys, so it is
/// restricted to `[a-z0-9_-]{1,32}` when it is created, not when a publish fails later.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AccountName(String);

/// An account name that cannot be one (see [`AccountName`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("account name `{0}` is not 1–32 characters of a-z, 0-9, `_` or `-` (it is used in NATS subjects), nor `pipeline` (kept for the pipeline's own alarms)")]
pub struct InvalidAccountName(pub String);

impl AccountName {
    /// Checks `name` and makes it an account name.
    pub fn new(name: &str) -> Result<Self, InvalidAccountName> {
        let ok = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && name != crate::alarm::PIPELINE;
        if ok {
            Ok(AccountName(name.to_owned()))
        } else {
            Err(InvalidAccountName(name.to_owned()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AccountName {
    type Err = InvalidAccountName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccountName::new(s)
    }
}

impl<'de> Deserialize<'de> for AccountName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        AccountName::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_names_round_trip() {
        for feed in Feed::ALL {
            assert_eq!(feed.as_str().parse::<Feed>(), Ok(feed));
            assert_eq!(Feed::from_api_name(feed.api_name()), Some(feed));
            assert_eq!(feed.log_type().feed(), feed);
        }
        assert!("signinattempts".parse::<Feed>().is_err());
    }

    #[test]
    fn account_names_are_subject_tokens() {
        for ok in ["acme", "a", "acme-eu_2", &"x".repeat(32)] {
            assert!(AccountName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Acme",
            "acme.eu",
            "acme eu",
            "a>b",
            "*",
            &"x".repeat(33),
        ] {
            let err = AccountName::new(bad).unwrap_err();
            assert!(err.to_string().contains("NATS subjects"), "{bad}");
        }
    }
}
