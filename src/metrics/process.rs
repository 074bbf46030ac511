//! The standard `process_*` metrics (memory, CPU, file descriptors), read from /proc/self at
//! scrape time and rendered as Prometheus text.
//!
//! Read at scrape time rather than sampled by a task: the value is exact when Prometheus asks,
//! and nothing runs between scrapes. The names and meanings are those of the official client
//! libraries, so stock dashboards and alerts work on them.

use std::fmt::Write;

/// One sample of the process, as the kernel reports it; None where /proc did not answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessSample {
    /// Resident set size, in bytes.
    pub resident_memory_bytes: Option<f64>,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: Option<f64>,
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Start time since the Unix epoch, in seconds.
    pub start_time_seconds: Option<f64>,
    /// File descriptors open now.
    pub open_fds: Option<f64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<f64>,
}

impl ProcessSample {
    /// Reads the calling process from /proc/self.
    pub(crate) fn read() -> ProcessSample {
        let mut sample = ProcessSample::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            sample.fill_from_stat(&stat, boot_time());
        }
        sample.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as f64);
        sample.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| soft_limit(&limits, "Max open files"));
        sample
    }

    /// Fills the fields found in /proc/self/stat (see proc(5)).
    fn fill_from_stat(&mut self, stat: &str, boot_time: Option<f64>) {
        // The command name (field 2) may hold spaces and parentheses: fields are counted from
        // the last `)`, where field 3 (state) starts.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        let ticks = clock_ticks();
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            self.cpu_seconds = Some((utime + stime) / ticks);
        }
        if let (Some(start), Some(boot)) = (field(22), boot_time) {
            self.start_time_seconds = Some(boot + start / ticks);
        }
        self.virtual_memory_bytes = field(23);
        self.resident_memory_bytes = field(24).map(|pages| pages * page_size());
    }

    /// The sample as Prometheus text: HELP and TYPE for each family that has a value.
    pub(crate) fn render(&self) -> String {
        let families: [(&str, &str, &str, Option<f64>); 6] = [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                self.cpu_seconds,
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                self.open_fds,
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                self.max_fds,
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                self.virtual_memory_bytes,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                self.resident_memory_bytes,
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in families {
            if let Some(value) = value {
                // Writing to a String cannot fail.
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                );
            }
        }
        out
    }
}

/// The soft limit of one row of /proc/self/limits ("unlimited" has no number and gives None).
fn soft_limit(limits: &str, row: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with(row))?;
    line[row.len()..].split_whitespace().next()?.parse().ok()
}

/// Boot time since the Unix epoch, in seconds (`btime` of /proc/stat).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Clock ticks per second, the unit of CPU and start times in /proc (100 on Linux if unknown).
fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the running system; it has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Bytes per memory page, the unit of RSS in /proc/self/stat (4096 if unknown).
fn page_size() -> f64 {
    // SAFETY: as above, a constant of the running system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as f64
    } else {
        4096.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A real line of /proc/self/stat, with a command name holding ") (".
        let stat = "4242 (a) (b) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 5 0 \
                    1000 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let mut sample = ProcessSample::default();
        sample.fill_from_stat(stat, Some(1_700_000_000.0));
        let ticks = clock_ticks();
        assert_eq!(sample.cpu_seconds, Some(300.0 / ticks));
        assert_eq!(
            sample.start_time_seconds,
            Some(1_700_000_000.0 + 1000.0 / ticks)
        );
        assert_eq!(sample.virtual_memory_bytes, Some(104_857_600.0));
        assert_eq!(sample.resident_memory_bytes, Some(2560.0 * page_size()));
    }

    #[test]
    fn limits_give_the_soft_value() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(1024.0));
    }

    #[test]
    fn this_process_is_read_and_rendered_with_help_and_type() {
        let sample = ProcessSample::read();
        assert!(
            sample.resident_memory_bytes.unwrap_or(0.0) > 0.0,
            "{sample:?}"
        );
        assert!(sample.open_fds.unwrap_or(0.0) >= 3.0, "{sample:?}");
        let text = sample.render();
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "{text}");
        }
    }
}
