//! Resident memory of this process, from Linux's /proc/self/status.
//!
//! A peak measurement ([`PeakRss`]) first hands freed heap pages back to the kernel (glibc's
//! `malloc_trim`, so memory freed by earlier work does not stay resident), then resets the
//! kernel's high-water mark `VmHWM` to the current resident size by writing `5` to
//! `/proc/self/clear_refs`; after the work, `VmHWM` minus the resident size at the start is
//! what the work added at its peak.

/// A field of /proc/self/status in bytes (`VmRSS`, `VmHWM`, ...); `None` off Linux or for an
/// unknown field.
pub fn status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Returns freed heap memory to the kernel (glibc `malloc_trim(0)`; a no-op elsewhere).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free heap pages; it has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// A started peak-resident-memory measurement (module docs).
#[derive(Debug, Clone, Copy)]
pub struct PeakRss {
    baseline: u64,
}

impl PeakRss {
    /// Trims the heap, resets the peak to the current resident size and records that size.
    /// `None` when /proc/self/clear_refs or /proc/self/status cannot be used.
    pub fn start() -> Option<Self> {
        trim_heap();
        std::fs::write("/proc/self/clear_refs", "5").ok()?;
        Some(PeakRss { baseline: status_bytes("VmRSS")? })
    }

    /// Resident size when the measurement started, bytes.
    pub fn baseline(&self) -> u64 {
        self.baseline
    }

    /// Peak resident size since [`PeakRss::start`], bytes.
    pub fn peak(&self) -> Option<u64> {
        status_bytes("VmHWM")
    }

    /// Peak resident size since the start minus the resident size at the start, bytes.
    pub fn peak_delta(&self) -> Option<u64> {
        Some(self.peak()?.saturating_sub(self.baseline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_parse() {
        if !std::path::Path::new("/proc/self/status").exists() {
            return;
        }
        // every Linux process has these; the values are whole kB
        let rss = status_bytes("VmRSS").expect("VmRSS in /proc/self/status");
        let hwm = status_bytes("VmHWM").expect("VmHWM");
        assert!(rss > 0 && hwm >= rss && rss.is_multiple_of(1024), "{rss} {hwm}");
        assert_eq!(status_bytes("NoSuchField"), None);
    }
}
