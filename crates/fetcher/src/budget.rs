//! The per-account request budget.
//!
//! 1Password allows 600 requests a minute and 30 000 an hour. All feeds of an account (and all
//! replicas' share of it, by configuration) draw from one budget set below those limits, so a
//! backfill of three feeds never earns a 429 in the first place.

use std::collections::VecDeque;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Mutex;

use oprelay_service::Clock;

pub struct Budget {
    per_minute: usize,
    per_hour: usize,
    clock: Clock,
    sent: Mutex<VecDeque<OffsetDateTime>>,
}

impl Budget {
    pub fn new(per_minute: u32, per_hour: u32, clock: Clock) -> Self {
        Budget {
            per_minute: per_minute.max(1) as usize,
            per_hour: per_hour.max(1) as usize,
            clock,
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits until one more request fits in both windows, and counts it.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let now = self.clock.now();
                let mut sent = self.sent.lock().await;
                while sent
                    .front()
                    .is_some_and(|t| *t <= now - Duration::from_secs(3600))
                {
                    sent.pop_front();
                }
                let minute_ago = now - Duration::from_secs(60);
                let in_minute = sent.iter().rev().take_while(|t| **t > minute_ago).count();
                if sent.len() < self.per_hour && in_minute < self.per_minute {
                    sent.push_back(now);
                    return;
                }
                let until = if sent.len() >= self.per_hour {
                    sent.front().copied().unwrap_or(now) + Duration::from_secs(3600)
                } else {
                    sent[sent.len() - in_minute] + Duration::from_secs(60)
                };
                until - now
            };
            self.clock
                .sleep(wait.try_into().unwrap_or(Duration::from_millis(10)))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_minute_waits_for_the_window_to_slide() {
        let clock = Clock::manual(OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
        let budget = std::sync::Arc::new(Budget::new(3, 100, clock.clone()));
        for _ in 0..3 {
            budget.acquire().await;
        }
        let fourth = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!fourth.is_finished(), "the fourth request must wait");
        clock.advance(Duration::from_secs(61));
        tokio::time::timeout(Duration::from_secs(5), fourth)
            .await
            .expect("admitted once the minute slid")
            .unwrap();
    }
}
