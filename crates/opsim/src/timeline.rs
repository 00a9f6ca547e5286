//! When each event arrives, and the opaque cursors that point into the arrival order.
//!
//! A feed is `backfill` events spread evenly over `backfill_span` before the simulator started,
//! followed by a live stream of `rate` events per second. Arrival order is the API's order, so a
//! late item usage (an old `timestamp`) still appears after everything that arrived before it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use oprelay_events::Feed;

#[derive(Clone, Debug)]
pub struct Timeline {
    pub start: OffsetDateTime,
    pub backfill: u64,
    pub backfill_span: Duration,
    /// Live events per second per feed.
    pub rate: f64,
}

impl Timeline {
    /// When event `index` arrived (or will).
    pub fn arrival(&self, index: u64) -> OffsetDateTime {
        if index < self.backfill {
            let span = self.backfill_span.whole_nanoseconds();
            let offset = span * i128::from(index) / i128::from(self.backfill.max(1));
            self.start - self.backfill_span + Duration::nanoseconds(offset as i64)
        } else if self.rate > 0.0 {
            let secs = (index - self.backfill) as f64 / self.rate;
            self.start + Duration::seconds_f64(secs)
        } else {
            OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT)
        }
    }

    /// How many events have arrived by `now`.
    pub fn available(&self, now: OffsetDateTime) -> u64 {
        self.first_at_or_after(now + Duration::nanoseconds(1))
    }

    /// The index of the first event that arrives at or after `t`.
    pub fn first_at_or_after(&self, t: OffsetDateTime) -> u64 {
        let begin = self.start - self.backfill_span;
        if t <= begin {
            return 0;
        }
        if t <= self.start {
            let span = self.backfill_span.whole_nanoseconds().max(1);
            let into = (t - begin).whole_nanoseconds();
            // ceil(into * backfill / span), then step over any index whose arrival rounds below t.
            let mut i = ((into * i128::from(self.backfill) + span - 1) / span) as u64;
            i = i.min(self.backfill);
            while i < self.backfill && self.arrival(i) < t {
                i += 1;
            }
            return i;
        }
        if self.rate <= 0.0 {
            return self.backfill;
        }
        let secs = (t - self.start).as_seconds_f64();
        let mut i = self.backfill + (secs * self.rate).ceil().max(0.0) as u64;
        while i > self.backfill && self.arrival(i - 1) >= t {
            i -= 1;
        }
        while self.arrival(i) < t {
            i += 1;
        }
        i
    }
}

/// What an opaque cursor encodes: the next position, the page size chosen at reset, and the
/// exclusive end when the reset had an `end_time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorState {
    #[serde(rename = "f")]
    pub feed: String,
    #[serde(rename = "p")]
    pub position: u64,
    #[serde(rename = "l")]
    pub limit: u32,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub end: Option<u64>,
    /// Ties a cursor to the simulator that issued it.
    #[serde(rename = "s")]
    pub seed: u64,
}

impl CursorState {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(cursor: &str, feed: Feed, seed: u64) -> Option<CursorState> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        let state: CursorState = serde_json::from_slice(&bytes).ok()?;
        (state.feed == feed.api_name() && state.seed == seed && (1..=1000).contains(&state.limit))
            .then_some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(rate: f64) -> Timeline {
        Timeline {
            start: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            backfill: 1000,
            backfill_span: Duration::hours(1),
            rate,
        }
    }

    #[test]
    fn arrivals_are_ordered_and_searchable() {
        let tl = timeline(10.0);
        let mut prev = tl.arrival(0);
        for i in 1..1200 {
            let a = tl.arrival(i);
            assert!(a >= prev, "arrival order at {i}");
            prev = a;
            let first = tl.first_at_or_after(a);
            assert!(
                tl.arrival(first) >= a && (first == 0 || tl.arrival(first - 1) < a),
                "{i}"
            );
        }
        assert_eq!(tl.available(tl.start - Duration::hours(2)), 0);
        assert_eq!(tl.available(tl.start - Duration::nanoseconds(1)), 1000);
        assert_eq!(tl.available(tl.start + Duration::seconds(10)), 1000 + 101);
        assert_eq!(timeline(0.0).available(tl.start + Duration::days(1)), 1000);
    }

    #[test]
    fn cursors_are_opaque_and_bound_to_feed_and_seed() {
        let c = CursorState {
            feed: "itemusages".into(),
            position: 42,
            limit: 100,
            end: None,
            seed: 9,
        };
        let s = c.encode();
        assert_eq!(CursorState::decode(&s, Feed::ItemUsages, 9), Some(c));
        assert_eq!(CursorState::decode(&s, Feed::AuditEvents, 9), None);
        assert_eq!(CursorState::decode(&s, Feed::ItemUsages, 8), None);
        assert_eq!(
            CursorState::decode("not-a-cursor", Feed::ItemUsages, 9),
            None
        );
    }
}
