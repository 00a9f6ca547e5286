//! Memory a burst left behind, given back when the burst is over.
//!
//! A service that has just worked through a backlog has freed what it used, but glibc's
//! allocator keeps most freed heap for the next allocation instead of returning it: the
//! forwarder, 12 MiB when started, stayed at 32 MiB for hours after one backfill. For a
//! process that idles most of the day next to a SIEM, the resident size is what an operator
//! sees and sizes limits by, so a loop that goes from busy to idle asks the allocator to
//! return its free pages once (`malloc_trim`). It costs a walk of the heap, once per burst,
//! never while busy.
//!
//! While busy, the opposite holds: memory freed by one page is what the next page needs. By
//! default glibc maps an allocation over its mmap threshold (128 KiB at start) on its own and
//! unmaps it when freed, and trims a heap's free top once it passes the trim threshold. A bus
//! message or an API page is 1–2 MiB, so in a backlog every page's buffers were mapped, faulted
//! in 4 KiB at a time (each page zeroed by the kernel) and unmapped again: a profile of the
//! normalizer in `bench-e2e` put 14 % of its CPU in the kernel's page-fault path.
//! [`keep_memory_while_busy`] raises both thresholds, so a burst reuses its memory, and
//! [`IdleTrim`] gives it back when the burst is over. Not all of it: `malloc_trim` releases the
//! free memory inside every arena and the main heap's free top, but not the free top of the
//! other arenas, which may keep up to `TRIM_THRESHOLD` each. Measured after a 300 000-record
//! burst, the forwarder's RSS 5 s later is 17–29 MiB with this against 13–17 MiB without; at
//! rest in the demo every service stays under 15 MiB.

/// Allocations up to this size come from the heap, not a mapping of their own: well above a
/// bus message (1 MiB by default) and an API page, and glibc's largest (32 MiB on 64-bit).
const MMAP_THRESHOLD: usize = 32 << 20;

/// Free memory a heap keeps at its top while busy: enough for the pages a burst has in hand
/// (measured: at 8 MiB the normalizer still took three in five of its page faults).
const TRIM_THRESHOLD: usize = 32 << 20;

/// Tells the allocator to keep freed memory for reuse while the service works (glibc; elsewhere
/// nothing). Called once at start, before the runtime's threads exist.
///
/// Each arena keeps its own free top, so arenas are capped at one per core the process may
/// use (glibc's default is eight per core): that bounds what a burst holds, and a service
/// runs about one busy thread per core.
pub fn keep_memory_while_busy() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes the allocator's tuning; it is called before other
        // threads start, and a value glibc does not take is refused (return 0) and changes
        // nothing.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

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

    /// Page faults this thread has taken so far.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn minor_faults() -> i64 {
        // SAFETY: getrusage writes into the zeroed struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
            0
        );
        usage.ru_minflt
    }

    /// What a backlog does: a few pages' buffers of a couple of MiB in hand at once, freed,
    /// then the next pages'. glibc's defaults give the freed memory back each round (three
    /// buffers free at the top pass its trim threshold) and the next round faults every page
    /// in again; kept for reuse, the later rounds fault next to nothing.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_burst_reuses_what_it_freed() {
        keep_memory_while_busy();
        let round = || {
            let pages: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8 + 1; 2 << 20]).collect();
            std::hint::black_box(&pages);
        };
        round();
        let before = minor_faults();
        for _ in 0..10 {
            round();
        }
        let faults = minor_faults() - before;
        // Ten rounds of 6 MiB faulted in again would be 15 360 faults of 4 KiB pages.
        assert!(
            faults < 500,
            "{faults} page faults in ten rounds after the first"
        );
    }
}
