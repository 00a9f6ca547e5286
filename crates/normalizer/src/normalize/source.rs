//! Which account a record belongs to, and the ids derived from it: `p_source_id`,
//! `p_source_label` and `p_row_id`.

use sha2::{Digest, Sha256};

use oprelay_events::LogType;

/// Which account the records belong to, as `p_source_id` / `p_source_label` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// `p_source_id`.
    pub id: String,
    /// `p_source_label`.
    pub label: String,
}

impl Source {
    /// The account's configured id and label, or a stable UUID derived from its name.
    pub fn for_account(account: &str, id: Option<&str>, label: Option<&str>) -> Source {
        Source {
            id: id
                .map(str::to_owned)
                .unwrap_or_else(|| derived_source_id(account)),
            label: label.unwrap_or(account).to_owned(),
        }
    }
}

/// A UUID (RFC 4122 layout, name-based) derived from the account name, so `p_source_id` is
/// stable across restarts and replicas without configuration.
pub fn derived_source_id(account: &str) -> String {
    let d = Sha256::digest(format!("oprelay-source:{account}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    oprelay_events::uuid_text(b)
}

/// `p_row_id`: lower-case hex, a function of the log type and the event uuid only, so the
/// same event normalized twice (a replay, a re-ingest) gets the same id and lands on the same
/// Elasticsearch document.
pub fn row_id(log_type: LogType, uuid: &str) -> String {
    String::from_utf8_lossy(&row_id_hex(log_type, uuid)).into_owned()
}

/// [`row_id`] as the 32 ASCII bytes the normalizer writes: no `String` per record.
pub(crate) fn row_id_hex(log_type: LogType, uuid: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(log_type.as_str().as_bytes());
    h.update([0]);
    h.update(uuid.as_bytes());
    let mut hex = [0u8; 32];
    // 16 bytes always fit 32 hex digits: encode_to_slice cannot fail here.
    let _ = hex::encode_to_slice(&h.finalize()[..16], &mut hex);
    hex
}
