//! The feed's cursor in `OP_CURSORS`: read (or fixed, for a feed seen the first time) before
//! a poll, and advanced with compare-and-set only after the page it follows is acknowledged.

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use oprelay_bus::BusError;
use oprelay_events::{CursorRequest, CursorState, FetchErrorKind};

use super::{DrainError, LeaseView, Poller, Stop};
use crate::api::{FetchedPage, Recovery};

/// The cursor as last read or written, with the revision its compare-and-set expects.
pub(super) struct StoredCursor {
    pub state: CursorState,
    pub revision: Option<u64>,
}

impl Poller {
    /// The request to send: the stored cursor, or a reset from the stored start time. A feed
    /// seen for the first time gets its start time fixed in `OP_CURSORS` before the first
    /// request, so a restart re-sends the identical reset.
    pub(super) async fn load_cursor(
        &mut self,
    ) -> Result<(CursorRequest, Option<u64>, CursorState), DrainError> {
        let current = match self.deps.cursors.get::<CursorState>(&self.key).await {
            Ok(c) => c,
            Err(e) => {
                return Err(self
                    .failed(
                        format!("cursor read failed: {e}"),
                        FetchErrorKind::CursorRead,
                        Recovery::Backoff,
                    )
                    .await)
            }
        };
        let limit = Some(self.account.config.page_size);
        match current {
            Some(v) if !v.value.cursor.is_empty() => Ok((
                CursorRequest::Cursor {
                    cursor: v.value.cursor.clone(),
                },
                Some(v.revision),
                v.value,
            )),
            Some(v) => Ok((
                CursorRequest::Reset {
                    limit,
                    start_time: v.value.start_time.clone(),
                    end_time: None,
                },
                Some(v.revision),
                v.value,
            )),
            None => {
                let now = self.deps.clock.now();
                let start = self
                    .account
                    .config
                    .start_time()
                    .unwrap_or(now - Duration::from_secs(3600));
                let state = CursorState {
                    cursor: String::new(),
                    start_time: Some(start.format(&Rfc3339).unwrap_or_default()),
                    updated_at: now,
                    pages: 0,
                    events: 0,
                };
                match self
                    .deps
                    .cursors
                    .compare_and_set(&self.key, &state, None)
                    .await
                {
                    Ok(rev) => Ok((
                        CursorRequest::Reset {
                            limit,
                            start_time: state.start_time.clone(),
                            end_time: None,
                        },
                        Some(rev),
                        state,
                    )),
                    Err(e) => Err(self.cursor_write_failed(e).await),
                }
            }
        }
    }

    /// Writes the page's cursor with compare-and-set, now that the page is acknowledged (or
    /// empty) — if the lease still holds. Should the lease lapse right after the check, the
    /// compare-and-set still refuses a cursor another replica has moved.
    pub(super) async fn advance_cursor(
        &mut self,
        cursor: &mut StoredCursor,
        page: &FetchedPage,
        fetched_at: OffsetDateTime,
        lease: &LeaseView,
    ) -> Result<(), DrainError> {
        if cursor.state.cursor == page.cursor {
            return Ok(());
        }
        if !lease.valid() {
            return Err(DrainError::Stop(Stop::LeaseLost));
        }
        let next = CursorState {
            cursor: page.cursor.clone(),
            start_time: None,
            updated_at: fetched_at,
            pages: cursor.state.pages + u64::from(page.count > 0),
            events: cursor.state.events + page.count as u64,
        };
        match self
            .deps
            .cursors
            .compare_and_set(&self.key, &next, cursor.revision)
            .await
        {
            Ok(rev) => {
                *cursor = StoredCursor {
                    state: next,
                    revision: Some(rev),
                };
                Ok(())
            }
            Err(e) => Err(self.cursor_write_failed(e).await),
        }
    }

    /// A cursor write that did not go through: lost to another writer (read the cursor again
    /// shortly), or failed (recorded, with backoff).
    async fn cursor_write_failed(&mut self, e: BusError) -> DrainError {
        match e {
            BusError::Conflict { .. } => {
                tracing::warn!("cursor changed under us (another replica?); re-reading it");
                DrainError::Retry(Duration::from_millis(100))
            }
            e => {
                self.failed(
                    format!("cursor write failed: {e}"),
                    FetchErrorKind::CursorWrite,
                    Recovery::Backoff,
                )
                .await
            }
        }
    }
}
