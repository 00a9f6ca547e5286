//! Bearer tokens shaped like 1Password's Events Reporting tokens.
//!
//! Real tokens are ES256 JWS whose claims collectors read without verifying: `aud` names the
//! Events API host, `1password.com/fts` the features, `exp` the expiry. The simulator mints
//! tokens with the same shape and remembers each one it issued, so a token it did not mint (or a
//! tampered one) is rejected as the real server would reject a bad signature.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use oprelay_events::Feed;

/// What a minted token may do and for how long.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TokenSpec {
    /// Features (`signinattempts`, `itemusages`, `auditevents`); all three when empty.
    #[serde(default)]
    pub features: Vec<Feed>,
    /// Seconds until `exp`; no `exp` claim when absent, like a token issued to never expire.
    #[serde(default)]
    pub expires_in_secs: Option<i64>,
}

impl Default for TokenSpec {
    fn default() -> Self {
        TokenSpec {
            features: Feed::ALL.to_vec(),
            expires_in_secs: None,
        }
    }
}

/// The claims of a minted token, as a collector would decode them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Claims {
    pub aud: Vec<String>,
    #[serde(rename = "1password.com/fts")]
    pub features: Vec<String>,
    #[serde(rename = "1password.com/auuid")]
    pub account_uuid: String,
    pub iss: String,
    pub sub: String,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub jti: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Missing,
    Malformed,
    Unknown,
    Expired,
    Revoked,
    FeatureMissing,
}

impl Rejection {
    pub fn message(self) -> &'static str {
        match self {
            Rejection::Missing => "Unauthorized: no bearer token",
            Rejection::Malformed => "Unauthorized: malformed token",
            Rejection::Unknown => "Unauthorized: invalid token",
            Rejection::Expired => "Unauthorized: token expired",
            Rejection::Revoked => "Unauthorized: token revoked",
            Rejection::FeatureMissing => "Unauthorized: token is not scoped for this resource",
        }
    }
}

#[derive(Debug)]
struct Issued {
    token: String,
    claims: Claims,
    issued_at: OffsetDateTime,
    revoked: bool,
}

/// Every token the simulator has minted, by `jti`.
#[derive(Debug, Default)]
pub struct TokenRegistry {
    issued: HashMap<String, Issued>,
}

/// A token the registry accepted.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub jti: String,
    pub claims: Claims,
    pub issued_at: OffsetDateTime,
}

impl TokenRegistry {
    pub fn mint(
        &mut self,
        spec: &TokenSpec,
        audience: &str,
        account_uuid: &str,
        now: OffsetDateTime,
        rng: &mut impl RngCore,
    ) -> String {
        let features = if spec.features.is_empty() {
            Feed::ALL.to_vec()
        } else {
            spec.features.clone()
        };
        let claims = Claims {
            aud: vec![audience.to_owned()],
            features: features.iter().map(|f| f.api_name().to_owned()).collect(),
            account_uuid: account_uuid.to_owned(),
            iss: "com.1password.b5".to_owned(),
            sub: crate::generate::random_uuid(rng),
            iat: now.unix_timestamp(),
            exp: spec.expires_in_secs.map(|s| now.unix_timestamp() + s),
            jti: crate::generate::random_uuid(rng).to_lowercase(),
        };
        let header = serde_json::json!({"alg": "ES256", "kid": "opsim", "typ": "JWT"});
        let mut signature = [0u8; 64];
        rng.fill(&mut signature[..]);
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default()),
            URL_SAFE_NO_PAD.encode(signature)
        );
        self.issued.insert(
            claims.jti.clone(),
            Issued {
                token: token.clone(),
                claims,
                issued_at: now,
                revoked: false,
            },
        );
        token
    }

    /// Checks a bearer token the way the real server would, and the feature when one is needed.
    pub fn check(
        &self,
        token: Option<&str>,
        feature: Option<Feed>,
        now: OffsetDateTime,
    ) -> Result<Accepted, Rejection> {
        let token = token.ok_or(Rejection::Missing)?;
        let claims = decode_claims(token).ok_or(Rejection::Malformed)?;
        let issued = self.issued.get(&claims.jti).ok_or(Rejection::Unknown)?;
        if issued.token != token {
            return Err(Rejection::Unknown);
        }
        if issued.revoked {
            return Err(Rejection::Revoked);
        }
        if matches!(issued.claims.exp, Some(exp) if exp <= now.unix_timestamp()) {
            return Err(Rejection::Expired);
        }
        if let Some(feed) = feature {
            if !issued.claims.features.iter().any(|f| f == feed.api_name()) {
                return Err(Rejection::FeatureMissing);
            }
        }
        Ok(Accepted {
            jti: claims.jti,
            claims: issued.claims.clone(),
            issued_at: issued.issued_at,
        })
    }

    /// Marks a token revoked (`true`) or valid again (`false`). False when it was never minted.
    pub fn set_revoked(&mut self, token: &str, revoked: bool) -> bool {
        let Some(claims) = decode_claims(token) else {
            return false;
        };
        match self.issued.get_mut(&claims.jti) {
            Some(issued) if issued.token == token => {
                issued.revoked = revoked;
                true
            }
            _ => false,
        }
    }
}

/// Decodes the claims segment without verifying anything, as collectors do.
pub fn decode_claims(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || signature.is_empty() {
        return None;
    }
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header.get("alg")?.as_str()? != "ES256" {
        return None;
    }
    URL_SAFE_NO_PAD.decode(signature).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn registry() -> (TokenRegistry, String, OffsetDateTime) {
        let mut reg = TokenRegistry::default();
        let now = OffsetDateTime::now_utc();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let spec = TokenSpec {
            features: vec![Feed::ItemUsages],
            expires_in_secs: Some(60),
        };
        let token = reg.mint(&spec, "events.example:443", "ACCT", now, &mut rng);
        (reg, token, now)
    }

    #[test]
    fn minted_tokens_look_like_real_ones() {
        let (_, token, now) = registry();
        assert_eq!(token.split('.').count(), 3);
        let claims = decode_claims(&token).expect("claims decode");
        assert_eq!(claims.aud, vec!["events.example:443".to_owned()]);
        assert_eq!(claims.features, vec!["itemusages".to_owned()]);
        assert_eq!(claims.exp, Some(now.unix_timestamp() + 60));
    }

    #[test]
    fn every_rejection_case() {
        let (mut reg, token, now) = registry();
        assert!(reg.check(Some(&token), Some(Feed::ItemUsages), now).is_ok());
        assert_eq!(reg.check(None, None, now).unwrap_err(), Rejection::Missing);
        assert_eq!(
            reg.check(Some("abc"), None, now).unwrap_err(),
            Rejection::Malformed
        );
        let tampered = format!("{}x", &token[..token.len() - 1]);
        assert!(matches!(
            reg.check(Some(&tampered), None, now).unwrap_err(),
            Rejection::Unknown | Rejection::Malformed
        ));
        assert_eq!(
            reg.check(Some(&token), Some(Feed::AuditEvents), now)
                .unwrap_err(),
            Rejection::FeatureMissing
        );
        let later = now + time::Duration::seconds(61);
        assert_eq!(
            reg.check(Some(&token), None, later).unwrap_err(),
            Rejection::Expired
        );
        assert!(reg.set_revoked(&token, true));
        assert_eq!(
            reg.check(Some(&token), None, now).unwrap_err(),
            Rejection::Revoked
        );
        assert!(reg.set_revoked(&token, false));
        assert!(reg.check(Some(&token), None, now).is_ok());
    }
}
