//! What machine this is: read from Linux's /proc, with neutral answers elsewhere.

/// `model name` of the first processor in /proc/cpuinfo ("unknown" when absent).
pub fn cpu_model() -> String {
    cpuinfo_field("model name").unwrap_or_else(|| "unknown".into())
}

/// The CPU features among AVX2, AVX-512F, AVX-512 VNNI, AVX512-BF16, AMX-TILE and AMX-BF16
/// that /proc/cpuinfo lists (its names: `avx2`, `avx512f`, ...), in that order.
pub fn cpu_flags() -> Vec<String> {
    let flags = cpuinfo_field("flags").unwrap_or_default();
    ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]
        .iter()
        .filter(|f| flags.split_whitespace().any(|x| x == **f))
        .map(|f| f.to_string())
        .collect()
}

/// True when /proc/cpuinfo lists AMX-BF16 or AVX512-BF16 (x86 Linux), where oneDNN runs bf16
/// convolutions natively; false elsewhere.
pub fn cpu_has_native_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.contains(" amx_bf16") || s.contains(" avx512_bf16"))
        .unwrap_or(false)
}

fn cpuinfo_field(name: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// Logical CPUs this process may use (`std::thread::available_parallelism`, 1 if unknown).
pub fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Host name (/proc/sys/kernel/hostname; "unknown" elsewhere).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// /proc/loadavg's 1, 5 and 15 minute load averages (empty when unreadable).
pub fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default()
}

/// User + system CPU seconds of this process (all threads), from /proc/self/stat (clock ticks
/// of 1/100 s, Linux's USER_HZ); `None` elsewhere.
pub fn process_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// One line for logs and result files: `CPU MODEL, N logical CPUs[, flags ...]`.
pub fn describe() -> String {
    let flags = cpu_flags();
    let flags = if flags.is_empty() { String::new() } else { format!(", {}", flags.join(" ")) };
    format!("{}, {} logical CPUs{flags}", cpu_model(), logical_cpus())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_is_described() {
        assert!(logical_cpus() >= 1);
        if std::path::Path::new("/proc/cpuinfo").exists() {
            assert_ne!(cpu_model(), "unknown");
            assert_eq!(load_average().len(), 3);
            let t = process_cpu_seconds().unwrap();
            assert!(t >= 0.0 && t.is_finite());
        }
        // native bf16 is exactly "a bf16 flag is listed"
        let f = cpu_flags();
        assert_eq!(cpu_has_native_bf16(), f.iter().any(|x| x == "avx512_bf16" || x == "amx_bf16"));
        assert!(describe().contains("logical CPUs"));
    }
}
