//! How long to wait after a failure.
//!
//! The fetcher's two regimes over the shared `oprelay_service::Backoff`: full jitter for what
//! fixes itself (5xx, timeouts, 429 without `Retry-After`), minutes apart for what a human must
//! fix (a rejected token), and exactly the server's `Retry-After` when it sends one.

use std::time::Duration;

use rand::Rng;

use oprelay_service::{Backoff as Shared, Retries};

use crate::api::Recovery;

/// Bounds of the two retry regimes.
#[derive(Clone, Copy, Debug)]
pub struct BackoffPolicy {
    /// 5xx, timeouts, truncated or malformed bodies, 429 without `Retry-After`.
    pub transient_base: Duration,
    pub transient_cap: Duration,
    /// Rejected tokens and bad requests: a human must act, so retry every few minutes.
    pub slow_base: Duration,
    pub slow_cap: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            transient_base: Duration::from_secs(1),
            transient_cap: Duration::from_secs(180),
            slow_base: Duration::from_secs(120),
            slow_cap: Duration::from_secs(900),
        }
    }
}

/// Consecutive failures of one feed and the wait they call for.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    /// Counts the failures, and draws the transient regime's waits.
    transient: Retries,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        // Full jitter, but never below a tenth of a second: no tight loop.
        let transient = Shared::full_jitter(policy.transient_base, policy.transient_cap)
            .at_least(Duration::from_millis(100));
        Backoff {
            policy,
            transient: Retries::new(transient),
        }
    }

    /// Failed requests since the last success.
    pub fn failures(&self) -> u32 {
        self.transient.failures()
    }

    /// A success: the next failure starts from the shortest wait again.
    pub fn reset(&mut self) {
        self.transient.reset();
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next(&mut self, recovery: Recovery) -> Duration {
        let transient_wait = self.transient.failed();
        let p = &self.policy;
        match recovery {
            Recovery::Backoff => transient_wait,
            // The server said when; a little jitter keeps replicas apart.
            Recovery::WaitExactly(d) => d + Duration::from_millis(rand::rng().random_range(0..250)),
            // ±10 %: slow means slow; jitter only de-synchronises.
            Recovery::Slow => Shared::spread(p.slow_base, p.slow_cap, 10).wait(self.failures()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_waits_grow_and_stay_capped() {
        let mut b = Backoff::new(BackoffPolicy::default());
        for i in 0..30 {
            let d = b.next(Recovery::Backoff);
            let bound = Duration::from_secs(1u64 << i.min(20)).min(Duration::from_secs(180));
            assert!(
                d <= bound.max(Duration::from_millis(100)),
                "attempt {i}: {d:?}"
            );
            assert!(d >= Duration::from_millis(100));
        }
        assert_eq!(b.failures(), 30);
        b.reset();
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn slow_waits_are_minutes_and_retry_after_is_honoured() {
        let mut b = Backoff::new(BackoffPolicy::default());
        let first = b.next(Recovery::Slow);
        assert!(
            first >= Duration::from_secs(108) && first <= Duration::from_secs(132),
            "{first:?}"
        );
        for _ in 0..10 {
            assert!(b.next(Recovery::Slow) <= Duration::from_secs(990));
        }
        let d = b.next(Recovery::WaitExactly(Duration::from_secs(30)));
        assert!(d >= Duration::from_secs(30) && d < Duration::from_millis(30_250));
    }
}
