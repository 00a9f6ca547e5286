//! How long to wait before trying again: the one backoff every part of oprelay uses (the
//! fetcher's polls, the forwarder's deliveries, healthwatch's notifications, a service waiting
//! for NATS at start, and the bus client's reconnects).
//!
//! Exponential with jitter: the bound doubles from `base` up to `cap`, and the wait is drawn
//! below it — uniformly from zero ("full jitter", so replicas that failed together do not retry
//! together), or within a spread around it where a wait must stay close to the bound. It lives
//! in the bus crate because the bus's reconnects use it and every other crate depends on this
//! one.

use std::time::Duration;

/// How the wait is drawn below the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform between the floor and the bound.
    Full,
    /// Within ± this many percent of the bound: for waits that must stay long (a human must
    /// fix something) or short (a reconnect), where jitter only de-synchronises.
    Spread(u8),
}

/// A backoff policy. `wait(n)` is the wait after the n-th failure in a row (from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The bound after the first failure.
    pub base: Duration,
    /// The bound never grows past this.
    pub cap: Duration,
    /// No wait is shorter: no tight loop, whatever the draw.
    pub floor: Duration,
    /// How the wait is drawn below the bound.
    pub jitter: Jitter,
}

impl Backoff {
    /// Full jitter under a bound doubling from `base` to `cap`.
    pub const fn full_jitter(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            floor: Duration::ZERO,
            jitter: Jitter::Full,
        }
    }

    /// ± `percent` around a bound doubling from `base` to `cap`.
    pub const fn spread(base: Duration, cap: Duration, percent: u8) -> Backoff {
        Backoff {
            base,
            cap,
            floor: Duration::ZERO,
            jitter: Jitter::Spread(percent),
        }
    }

    /// The same policy, never waiting less than `floor`.
    pub const fn at_least(mut self, floor: Duration) -> Backoff {
        self.floor = floor;
        self
    }

    /// The bound after the `attempt`-th failure in a row (attempt 0 counts as 1).
    pub fn bound(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }

    /// The wait after the `attempt`-th failure in a row, drawn at random.
    pub fn wait(&self, attempt: u32) -> Duration {
        self.wait_drawn(attempt, rand::random::<f64>())
    }

    /// The wait for a given draw in `[0, 1)`: [`Backoff::wait`] without the randomness, for
    /// tests and for callers with their own source.
    pub fn wait_drawn(&self, attempt: u32, draw: f64) -> Duration {
        let bound = self.bound(attempt);
        let draw = draw.clamp(0.0, 1.0);
        let wait = match self.jitter {
            Jitter::Full => bound.mul_f64(draw),
            Jitter::Spread(percent) => {
                let spread = f64::from(percent.min(100)) / 100.0;
                bound.mul_f64(1.0 - spread + 2.0 * spread * draw)
            }
        };
        wait.max(self.floor)
    }
}

/// Failures in a row under one policy, and the wait each calls for.
#[derive(Clone, Debug)]
pub struct Retries {
    policy: Backoff,
    failures: u32,
}

impl Retries {
    /// No failure yet.
    pub fn new(policy: Backoff) -> Retries {
        Retries {
            policy,
            failures: 0,
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure waits the shortest again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.policy.wait(self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_bound_doubles_up_to_the_cap() {
        let b = Backoff::full_jitter(SECOND, 30 * SECOND);
        let bounds: Vec<u64> = (1..=7).map(|n| b.bound(n).as_secs()).collect();
        assert_eq!(bounds, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.bound(0), SECOND, "attempt 0 counts as the first");
        assert_eq!(b.bound(u32::MAX), 30 * SECOND, "no overflow");
    }

    #[test]
    fn full_jitter_spans_floor_to_bound() {
        let b = Backoff::full_jitter(SECOND, 60 * SECOND).at_least(Duration::from_millis(100));
        assert_eq!(
            b.wait_drawn(3, 0.0),
            Duration::from_millis(100),
            "the floor"
        );
        assert_eq!(b.wait_drawn(3, 0.5), 2 * SECOND);
        assert_eq!(b.wait_drawn(3, 1.0), 4 * SECOND);
        for n in 1..40 {
            let w = b.wait(n);
            assert!(w >= b.floor && w <= b.bound(n).max(b.floor), "{n}: {w:?}");
        }
    }

    #[test]
    fn a_spread_stays_near_the_bound() {
        let b = Backoff::spread(100 * SECOND, 100 * SECOND, 10);
        assert_eq!(b.wait_drawn(1, 0.0), 90 * SECOND);
        assert_eq!(b.wait_drawn(1, 1.0), 110 * SECOND);
    }

    #[test]
    fn retries_count_failures_until_a_success() {
        let mut r = Retries::new(Backoff::full_jitter(SECOND, 8 * SECOND));
        for _ in 0..5 {
            assert!(r.failed() <= 8 * SECOND);
        }
        assert_eq!(r.failures(), 5);
        r.reset();
        assert_eq!(r.failures(), 0);
        assert!(r.failed() <= SECOND);
    }
}
