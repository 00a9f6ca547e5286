//! Parsing command-line values into oprelay's types, with errors that say what is accepted.

use oprelay_events::{AccountName, Feed, LookupKind};
use oprelay_service::config::OutputFormat;

pub fn parse_kind(s: &str) -> Result<LookupKind, String> {
    LookupKind::ALL
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("`{s}` is not item, vault, user or group"))
}

pub fn parse_feed(s: &str) -> Result<Feed, String> {
    Feed::ALL
        .into_iter()
        .find(|f| f.as_str() == s)
        .ok_or_else(|| format!("`{s}` is not signin_attempts, item_usages or audit_events"))
}

pub fn parse_format(s: &str) -> Result<OutputFormat, String> {
    match s {
        "panther" => Ok(OutputFormat::Panther),
        "raw" => Ok(OutputFormat::Raw),
        "ecs" => Ok(OutputFormat::Ecs),
        _ => Err(format!("`{s}` is not panther, raw or ecs")),
    }
}

pub fn account_name(name: &str) -> anyhow::Result<AccountName> {
    AccountName::new(name).map_err(|e| anyhow::anyhow!("--account {name:?}: {e}"))
}
