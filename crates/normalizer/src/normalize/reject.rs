//! Why a record or a page is refused, in words for the dead letter and as a metric label.

use std::fmt;

/// Why a record (or a whole page) went to the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejectReason {
    PageNotJson(String),
    NotAnEnvelope(String),
    NotAnObject,
    NoUuid,
    BadTimestamp(String),
}

impl RejectReason {
    /// Every value of [`RejectReason::label`], plus `too_large` (a record bigger than a bus
    /// message): the service creates each `reason` series at 0 when it starts.
    pub const LABELS: [&'static str; 6] = [
        "page_not_json",
        "not_an_envelope",
        "not_an_object",
        "no_uuid",
        "bad_timestamp",
        "too_large",
    ];

    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::PageNotJson(_) => "page_not_json",
            RejectReason::NotAnEnvelope(_) => "not_an_envelope",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::NoUuid => "no_uuid",
            RejectReason::BadTimestamp(_) => "bad_timestamp",
        }
    }

    pub fn is_page(&self) -> bool {
        matches!(
            self,
            RejectReason::PageNotJson(_) | RejectReason::NotAnEnvelope(_)
        )
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::PageNotJson(e) => write!(f, "page is not valid JSON: {e}"),
            RejectReason::NotAnEnvelope(e) => {
                write!(f, "page is not a {{cursor, has_more, items}} envelope: {e}")
            }
            RejectReason::NotAnObject => f.write_str("record is not a JSON object"),
            RejectReason::NoUuid => f.write_str("record has no uuid"),
            RejectReason::BadTimestamp(t) => write!(f, "timestamp {t} is not an RFC 3339 time"),
        }
    }
}

/// One record or page that could not be normalized, with the bytes as received.
#[derive(Clone, Debug, PartialEq)]
pub struct Reject {
    pub body: Vec<u8>,
    pub reason: RejectReason,
}

#[cfg(test)]
mod reason_tests {
    use super::RejectReason;

    #[test]
    fn every_reason_label_is_created_at_start() {
        for r in [
            RejectReason::PageNotJson(String::new()),
            RejectReason::NotAnEnvelope(String::new()),
            RejectReason::NotAnObject,
            RejectReason::NoUuid,
            RejectReason::BadTimestamp(String::new()),
        ] {
            assert!(RejectReason::LABELS.contains(&r.label()), "{r:?}");
        }
    }
}
