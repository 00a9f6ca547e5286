//! What a 1Password Events token says about itself.
//!
//! The official collectors read the JWT claims without verifying the signature (the server
//! verifies): `aud[0]` is the Events API host of the account's region, `1password.com/fts` the
//! feeds the token may read, `exp` its expiry. The fetcher does the same, so a user configures a
//! token and nothing else.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use time::OffsetDateTime;

use oprelay_events::Feed;

#[derive(Debug, Clone, PartialEq)]
pub struct TokenClaims {
    /// `https://` + the audience host, when the token names one.
    pub base_url: Option<String>,
    /// Feeds the token may read; `None` when the claim is absent (then introspection decides).
    pub features: Option<Vec<Feed>>,
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT (expected three dot-separated parts); is token_file the 1Password Events Reporting token?")]
    NotAJwt,
    #[error("the token's claims cannot be decoded ({0})")]
    BadClaims(String),
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(rename = "1password.com/fts", default)]
    fts: Option<Vec<String>>,
    #[serde(default)]
    exp: Option<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The legacy audience of tokens issued before the Events API had regional hosts; such tokens
/// carry no URL and need `base_url` in the config.
const LEGACY_AUDIENCE: &str = "com.1password.streamingservice";

pub fn decode(token: &str) -> Result<TokenClaims, TokenError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(claims), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::NotAJwt);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .map_err(|e| TokenError::BadClaims(e.to_string()))?;
    let raw: RawClaims =
        serde_json::from_slice(&bytes).map_err(|e| TokenError::BadClaims(e.to_string()))?;
    let host = match raw.aud {
        Some(Audience::One(h)) => Some(h),
        Some(Audience::Many(v)) if v.len() == 1 => v.into_iter().next(),
        _ => None,
    };
    let base_url = host
        .filter(|h| !h.is_empty() && h != LEGACY_AUDIENCE)
        .map(|h| format!("https://{h}"));
    let features = raw.fts.map(|fts| {
        fts.iter()
            .filter_map(|f| Feed::from_api_name(f))
            .collect::<Vec<_>>()
    });
    let expires_at = raw
        .exp
        .and_then(|e| OffsetDateTime::from_unix_timestamp(e).ok());
    Ok(TokenClaims {
        base_url,
        features,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode([7u8; 64])
        )
    }

    #[test]
    fn reads_region_features_and_expiry() {
        let t = jwt(serde_json::json!({
            "aud": ["events.1password.eu"], "1password.com/fts": ["itemusages", "auditevents", "future"],
            "exp": 1_900_000_000
        }));
        let c = decode(&t).unwrap();
        assert_eq!(c.base_url.as_deref(), Some("https://events.1password.eu"));
        assert_eq!(c.features, Some(vec![Feed::ItemUsages, Feed::AuditEvents]));
        assert_eq!(
            c.expires_at.map(|e| e.unix_timestamp()),
            Some(1_900_000_000)
        );
    }

    #[test]
    fn legacy_or_missing_audience_gives_no_url() {
        let c = decode(&jwt(
            serde_json::json!({"aud": ["com.1password.streamingservice"]}),
        ))
        .unwrap();
        assert_eq!(c.base_url, None);
        assert_eq!(c.features, None);
        let c = decode(&jwt(serde_json::json!({"aud": ["a", "b"]}))).unwrap();
        assert_eq!(c.base_url, None, "two audiences: ambiguous");
    }

    #[test]
    fn garbage_is_an_error_that_does_not_echo_the_token() {
        let err = decode("secret-value-not-a-jwt").unwrap_err();
        assert!(!err.to_string().contains("secret-value"));
        assert!(matches!(decode("a.!!!.c"), Err(TokenError::BadClaims(_))));
    }
}
