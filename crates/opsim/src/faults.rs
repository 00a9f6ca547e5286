//! Failures the simulator can be told to produce, one request at a time or at random.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use oprelay_events::Feed;

/// What goes wrong with a data request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status and the documented error body; `retry_after` adds the header.
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// Wait before answering normally.
    Slow { delay_ms: u64 },
    /// Announce the whole page in `Content-Length`, then drop the connection half-way.
    Truncate,
    /// Answer 200 with a body that is not JSON.
    Malformed,
    /// Answer normally, but pad the page's first event with a `padding` field of this many
    /// bytes: an event bigger than the bus takes.
    Oversized { bytes: usize },
}

/// A fault for the next `count` data requests (of `feed`, when given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<Feed>,
}

fn one() -> u32 {
    1
}

impl Fault {
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            kind,
            count: 1,
            feed: None,
        }
    }

    pub fn times(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    pub fn on(mut self, feed: Feed) -> Self {
        self.feed = Some(feed);
        self
    }
}

/// Queued faults, applied in order, plus an optional random failure rate.
#[derive(Debug, Default)]
pub struct FaultPlan {
    queue: VecDeque<Fault>,
    /// Probability that a data request fails at random (the `--chaos` flag).
    pub chaos: f64,
}

impl FaultPlan {
    pub fn push(&mut self, fault: Fault) {
        if fault.count > 0 {
            self.queue.push_back(fault);
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The fault for this request, if any: the first queued one that matches the feed, else a
    /// random one at the chaos rate.
    pub fn take(&mut self, feed: Feed, rng: &mut StdRng) -> Option<FaultKind> {
        if let Some(pos) = self
            .queue
            .iter()
            .position(|f| f.feed.is_none_or(|want| want == feed))
        {
            let fault = &mut self.queue[pos];
            fault.count -= 1;
            let kind = fault.kind.clone();
            if fault.count == 0 {
                self.queue.remove(pos);
            }
            return Some(kind);
        }
        if self.chaos > 0.0 && rng.random_bool(self.chaos.min(1.0)) {
            let kinds = [
                FaultKind::Status {
                    status: 500,
                    retry_after: None,
                },
                FaultKind::Status {
                    status: 502,
                    retry_after: None,
                },
                FaultKind::Status {
                    status: 503,
                    retry_after: None,
                },
                FaultKind::Status {
                    status: 429,
                    retry_after: Some(1),
                },
                FaultKind::Status {
                    status: 429,
                    retry_after: None,
                },
                FaultKind::Truncate,
                FaultKind::Malformed,
                FaultKind::Slow { delay_ms: 300 },
            ];
            return Some(kinds[rng.random_range(0..kinds.len())].clone());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn queued_faults_apply_in_order_and_by_feed() {
        let mut plan = FaultPlan::default();
        let mut rng = StdRng::seed_from_u64(1);
        plan.push(Fault::new(FaultKind::Truncate).on(Feed::AuditEvents));
        plan.push(Fault::new(FaultKind::Malformed).times(2));
        assert_eq!(
            plan.take(Feed::ItemUsages, &mut rng),
            Some(FaultKind::Malformed)
        );
        assert_eq!(
            plan.take(Feed::AuditEvents, &mut rng),
            Some(FaultKind::Truncate)
        );
        assert_eq!(
            plan.take(Feed::AuditEvents, &mut rng),
            Some(FaultKind::Malformed)
        );
        assert_eq!(plan.take(Feed::AuditEvents, &mut rng), None);
        assert_eq!(plan.pending(), 0);
    }

    #[test]
    fn faults_parse_from_the_control_api_shape() {
        let f: Fault =
            serde_json::from_str(r#"{"kind":"status","status":429,"retry_after":3,"count":2}"#)
                .unwrap();
        assert_eq!(f.count, 2);
        assert_eq!(
            f.kind,
            FaultKind::Status {
                status: 429,
                retry_after: Some(3)
            }
        );
    }
}
