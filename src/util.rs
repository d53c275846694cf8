//! Small formatting helpers shared by the CLI, the status page and log messages: byte sizes
//! (`1.5KiB`) and durations (`1m30s`). Pure functions, no crate imports: every layer may use them.

use std::time::Duration;

/// `1536` → `1.5KiB`: binary units, one decimal, plain bytes below 1 KiB.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// `90s` → `1m30s`: the form the policies accept, so a message can be pasted back into one.
pub fn human_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= n {
            out.push_str(&format!("{}{unit}", s / n));
            s %= n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(536_870_912), "512.0MiB");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_secs(86_400 * 3)), "3d");
        assert_eq!(human_duration(Duration::ZERO), "0s");
    }
}
