//! The Events API's documented limits: 600 requests a minute and 30 000 an hour, per token.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub per_minute: usize,
    pub per_hour: usize,
    /// Whether a 429 carries `Retry-After`. The docs promise none, so the default is false.
    pub retry_after_header: bool,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_minute: 600,
            per_hour: 30_000,
            retry_after_header: false,
        }
    }
}

/// Sliding one-minute and one-hour windows per token.
#[derive(Debug, Default)]
pub struct RateLimiter {
    seen: HashMap<String, VecDeque<OffsetDateTime>>,
}

impl RateLimiter {
    /// Records a request; `Err(wait)` when it is over a limit, with how long until it would not be.
    pub fn admit(
        &mut self,
        limits: &RateLimits,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<(), Duration> {
        let window = self.seen.entry(token.to_owned()).or_default();
        while window.front().is_some_and(|t| *t <= now - Duration::HOUR) {
            window.pop_front();
        }
        if window.len() >= limits.per_hour {
            let oldest = window.front().copied().unwrap_or(now);
            return Err(oldest + Duration::HOUR - now);
        }
        let minute_ago = now - Duration::MINUTE;
        let in_minute = window.iter().rev().take_while(|t| **t > minute_ago).count();
        if in_minute >= limits.per_minute {
            let oldest_in_minute = window[window.len() - in_minute];
            return Err(oldest_in_minute + Duration::MINUTE - now);
        }
        window.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_and_hour_windows() {
        let limits = RateLimits {
            per_minute: 3,
            per_hour: 5,
            retry_after_header: true,
        };
        let mut rl = RateLimiter::default();
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        for i in 0..3 {
            assert!(rl.admit(&limits, "a", t0 + Duration::seconds(i)).is_ok());
        }
        let wait = rl
            .admit(&limits, "a", t0 + Duration::seconds(3))
            .unwrap_err();
        assert_eq!(wait, Duration::seconds(57));
        assert!(rl.admit(&limits, "b", t0).is_ok(), "limits are per token");
        let t1 = t0 + Duration::seconds(61);
        assert!(rl.admit(&limits, "a", t1).is_ok());
        assert!(rl.admit(&limits, "a", t1).is_ok());
        let wait = rl.admit(&limits, "a", t1).unwrap_err();
        assert_eq!(wait, Duration::HOUR - Duration::seconds(61));
    }
}
