//! The per-account request budget, shared by every replica.
//!
//! 1Password allows 600 requests a minute and 30 000 an hour per token. All feeds of an account
//! draw from one budget set below those limits, so a backfill of three feeds never earns a 429
//! in the first place. The budget lives in `OP_LEASES` under `_budget.{account}`, changed with
//! compare-and-set, so three replicas polling one account's feeds share 500 requests a minute
//! instead of taking 500 each.
//!
//! The stored window counts requests per second for the last minute and per minute for the last
//! hour. Counting whole seconds (and whole minutes) errs on the safe side: a request is counted
//! until the API's own sliding window has surely forgotten it.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use oprelay_bus::{BusError, JsonKv};
use oprelay_events::AccountName;
use oprelay_service::{CancellationToken, Clock};

/// Requests sent per time bucket: `(bucket start in whole units, count)`, oldest first.
type Buckets = VecDeque<(i64, u32)>;

/// What is stored: the recent requests of one account, by every replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Per second, the last 61 seconds.
    #[serde(default)]
    seconds: Buckets,
    /// Per minute, the last 61 minutes.
    #[serde(default)]
    minutes: Buckets,
}

/// Limits of one account's budget.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub per_minute: u32,
    pub per_hour: u32,
}

impl Window {
    /// Counts one request at `now` if it fits both windows; otherwise how long until it would.
    pub fn take(&mut self, now: OffsetDateTime, limits: Limits) -> Result<(), Duration> {
        let second = now.unix_timestamp();
        let minute = second.div_euclid(60);
        // A request in second `s` may still be in the API's window until second `s + 60` ends,
        // so the window spans buckets `now - 60 ..= now` (61 of them); likewise for minutes.
        prune(&mut self.seconds, second - 60);
        prune(&mut self.minutes, minute - 60);
        let wait_second = wait_for_room(&self.seconds, limits.per_minute.max(1), 60);
        let wait_minute = wait_for_room(&self.minutes, limits.per_hour.max(1), 60);
        let retry_at = match (wait_second, wait_minute) {
            (None, None) => {
                bump(&mut self.seconds, second);
                bump(&mut self.minutes, minute);
                return Ok(());
            }
            (s, m) => {
                let at_second = s.unwrap_or(second);
                let at_minute = m.map_or(second, |m| m * 60);
                at_second.max(at_minute)
            }
        };
        let retry = OffsetDateTime::from_unix_timestamp(retry_at).unwrap_or(now);
        Err((retry - now)
            .try_into()
            .unwrap_or(Duration::from_millis(10)))
    }
}

fn prune(buckets: &mut Buckets, oldest_kept: i64) {
    while buckets.front().is_some_and(|(at, _)| *at < oldest_kept) {
        buckets.pop_front();
    }
}

fn bump(buckets: &mut Buckets, at: i64) {
    match buckets.back_mut() {
        Some((last, n)) if *last == at => *n += 1,
        _ => buckets.push_back((at, 1)),
    }
}

/// With `buckets` spanning `span + 1` units up to now: `None` if one more request fits, else
/// the first unit at whose start enough old buckets have left the window.
fn wait_for_room(buckets: &Buckets, limit: u32, span: i64) -> Option<i64> {
    let mut total: u64 = buckets.iter().map(|(_, n)| u64::from(*n)).sum();
    if total < u64::from(limit) {
        return None;
    }
    for (at, n) in buckets {
        total -= u64::from(*n);
        if total < u64::from(limit) {
            // Bucket `at` leaves the window when the window starts after it.
            return Some(at + span + 1);
        }
    }
    buckets.back().map(|(at, _)| at + span + 1)
}

/// One account's budget: the shared window in `OP_LEASES`.
pub struct Budget {
    limits: Limits,
    clock: Clock,
    store: JsonKv,
    key: String,
}

/// Where an account's budget is kept in `OP_LEASES`.
pub fn budget_key(account: &AccountName) -> String {
    format!("_budget.{account}")
}

impl Budget {
    pub fn new(
        account: &AccountName,
        per_minute: u32,
        per_hour: u32,
        store: JsonKv,
        clock: Clock,
    ) -> Self {
        Budget {
            limits: Limits {
                per_minute,
                per_hour,
            },
            clock,
            store,
            key: budget_key(account),
        }
    }

    /// Waits until one more request fits in both windows and counts it, or returns `false` when
    /// `cancel` fires first. While the bus cannot be reached no request is sent: an uncounted
    /// request could be the one over the API's limit.
    pub async fn acquire(&self, cancel: &CancellationToken) -> bool {
        loop {
            let wait = match self.try_take().await {
                Ok(Ok(())) => return true,
                Ok(Err(wait)) => wait,
                Err(BusError::Conflict { .. }) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the shared request budget; waiting");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = self.clock.sleep(wait) => {}
            }
        }
    }

    async fn try_take(&self) -> Result<Result<(), Duration>, BusError> {
        let current = self.store.get::<Window>(&self.key).await?;
        let (mut window, revision) = match current {
            Some(v) => (v.value, Some(v.revision)),
            None => (Window::default(), None),
        };
        match window.take(self.clock.now(), self.limits) {
            Ok(()) => {
                self.store
                    .compare_and_set(&self.key, &window, revision)
                    .await?;
                Ok(Ok(()))
            }
            Err(wait) => Ok(Err(wait)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    const SMALL: Limits = Limits {
        per_minute: 3,
        per_hour: 5,
    };

    #[test]
    fn a_full_minute_waits_until_the_oldest_second_is_surely_out_of_the_apis_window() {
        let mut w = Window::default();
        for i in 0..3 {
            w.take(at(i), SMALL).unwrap();
        }
        let wait = w.take(at(10), SMALL).unwrap_err();
        // The request at second 0 leaves every 60 s window that starts after second 0 ends:
        // at second 61 at the latest.
        assert_eq!(wait, Duration::from_secs(51));
        w.take(at(61), SMALL).unwrap();
    }

    #[test]
    fn the_hour_holds_even_when_every_minute_has_room() {
        let mut w = Window::default();
        for i in 0..5 {
            w.take(at(i * 70), SMALL).unwrap();
        }
        let wait = w.take(at(5 * 70), SMALL).unwrap_err();
        assert!(
            wait > Duration::from_secs(3000),
            "waits for the hour: {wait:?}"
        );
    }

    #[test]
    fn a_window_survives_the_round_trip_through_the_store() {
        let mut w = Window::default();
        w.take(at(0), SMALL).unwrap();
        w.take(at(0), SMALL).unwrap();
        let back: Window = serde_json::from_slice(&serde_json::to_vec(&w).unwrap()).unwrap();
        assert_eq!(back, w);
        let mut back = back;
        back.take(at(1), SMALL).unwrap();
        assert!(
            back.take(at(2), SMALL).is_err(),
            "three in the minute already"
        );
    }
}
