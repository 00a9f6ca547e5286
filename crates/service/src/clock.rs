//! Time that tests can control.
//!
//! Leases, drop-off windows and backoff all depend on "now" and on sleeping. With a manual
//! clock a test moves time forward by a day in a microsecond and every sleeper whose deadline
//! passed wakes up, so no test waits for real time to pass.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<watch::Sender<OffsetDateTime>>),
}

impl Clock {
    pub fn manual(start: OffsetDateTime) -> Clock {
        Clock::Manual(Arc::new(watch::Sender::new(start)))
    }

    pub fn now(&self) -> OffsetDateTime {
        match self {
            Clock::System => OffsetDateTime::now_utc(),
            Clock::Manual(tx) => *tx.borrow(),
        }
    }

    /// Moves a manual clock forward and wakes the sleepers it passed. No effect on the system
    /// clock.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(tx) = self {
            tx.send_modify(|t| *t += by);
        }
    }

    /// Sleeps until `by` has passed on this clock, counted from the first poll.
    pub async fn sleep(&self, by: Duration) {
        let deadline = self.now() + by;
        self.sleep_until(deadline).await;
    }

    /// Sleeps until this clock reads `deadline` or later.
    pub async fn sleep_until(&self, deadline: OffsetDateTime) {
        match self {
            Clock::System => {
                let left = deadline - OffsetDateTime::now_utc();
                if left.is_positive() {
                    tokio::time::sleep(left.unsigned_abs()).await;
                }
            }
            Clock::Manual(tx) => {
                let mut rx = tx.subscribe();
                // wait_for returns at once if already there; errors only if the sender is gone,
                // which cannot happen while `self` holds it.
                let _ = rx.wait_for(|now| *now >= deadline).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleepers_wake_when_time_passes() {
        let clock = Clock::manual(OffsetDateTime::UNIX_EPOCH);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(3600)).await }
        });
        tokio::task::yield_now().await; // let the sleeper take its deadline
        clock.advance(Duration::from_secs(1800));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "half an hour is not an hour");
        clock.advance(Duration::from_secs(1800));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woke up")
            .expect("no panic");
        assert_eq!(
            clock.now(),
            OffsetDateTime::UNIX_EPOCH + Duration::from_secs(3600)
        );
    }
}
