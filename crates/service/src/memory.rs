//! Memory a burst left behind, given back when the burst is over.
//!
//! A service that has just worked through a backlog has freed what it used, but glibc's
//! allocator keeps most freed heap for the next allocation instead of returning it: the
//! forwarder, 12 MiB when started, stayed at 32 MiB for hours after one backfill. For a
//! process that idles most of the day next to a SIEM, the resident size is what an operator
//! sees and sizes limits by, so a loop that goes from busy to idle asks the allocator to
//! return its free pages once (`malloc_trim`). It costs a walk of the heap, once per burst,
//! never while busy.

/// Remembers whether a loop has worked since it last went idle.
#[derive(Debug, Default)]
pub struct IdleTrim {
    busy: bool,
}

impl IdleTrim {
    /// The loop did some work.
    pub fn busy(&mut self) {
        self.busy = true;
    }

    /// The loop found nothing to do; the first time after work, free memory is returned.
    /// Returns whether it was.
    pub fn idle(&mut self) -> bool {
        if !std::mem::take(&mut self.busy) {
            return false;
        }
        release_free_memory();
        true
    }
}

/// Returns the allocator's free pages to the system, where the allocator can (glibc);
/// elsewhere it does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases memory no allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_released_once_per_burst() {
        let mut trim = IdleTrim::default();
        assert!(!trim.idle(), "idle from the start: nothing to give back");
        trim.busy();
        trim.busy();
        assert!(trim.idle(), "the first idle round after work releases");
        assert!(!trim.idle(), "and the next ones do not");
        trim.busy();
        assert!(trim.idle(), "a new burst, a new release");
    }
}
