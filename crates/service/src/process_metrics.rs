//! The process's own CPU, memory and file descriptors, read from `/proc/self` at each scrape,
//! under the names every Prometheus client library uses (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`), so the dashboard's CPU and memory
//! panels work without cAdvisor and the same queries work for any process.
//!
//! Off Linux (no `/proc`) the collector writes nothing rather than zeros, so a panel shows
//! "no data" instead of a false flat line.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// `/proc` reports CPU times in USER_HZ ticks, which the kernel fixes at 100 per second for
/// every architecture's user-space ABI (whatever the kernel's internal HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of the process's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_bytes: i64,
    pub open_fds: i64,
}

impl ProcessSample {
    /// Reads `/proc/self`; `None` where there is no procfs.
    pub fn read() -> Option<ProcessSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
        Some(ProcessSample {
            cpu_seconds: cpu_seconds(&stat)?,
            resident_bytes: resident_bytes(&status)?,
            open_fds,
        })
    }
}

/// User plus system CPU time from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so the fields are counted from the
/// last `)`: after it come field 3 (state) onwards, and utime/stime are fields 14 and 15.
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// `VmRSS` from `/proc/<pid>/status` (reported in kB, i.e. KiB), in bytes.
pub fn resident_bytes(status: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Registered once per process next to the `oprelay_*` metrics.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sample) = ProcessSample::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(sample.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(sample.resident_bytes);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            rss.metric_type(),
        )?)?;
        let fds = ConstGauge::new(sample.open_fds);
        fds.encode(encoder.encode_descriptor(
            "process_open_fds",
            "Open file descriptors",
            None,
            fds.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        // A real line's shape: utime 250 and stime 50 ticks are fields 14 and 15.
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                    9 0 123456 100000000 5000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 \
                    1 0 0 0 0 0";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(cpu_seconds("4242 (truncated) S 1 2"), None);
    }

    #[test]
    fn resident_memory_is_vmrss_in_bytes() {
        let status = "Name:\tnormalizer\nVmPeak:\t  90000 kB\nVmRSS:\t   51712 kB\nThreads:\t3\n";
        assert_eq!(resident_bytes(status), Some(51712 * 1024));
        assert_eq!(resident_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_cpu_memory_and_descriptors() {
        let sample = ProcessSample::read().expect("procfs on Linux");
        assert!(sample.resident_bytes > 1024 * 1024, "{sample:?}");
        assert!(sample.open_fds >= 3, "{sample:?}");
        assert!(sample.cpu_seconds >= 0.0, "{sample:?}");
    }
}
