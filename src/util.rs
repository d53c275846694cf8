//! Small helpers every layer may use: byte sizes (`1.5KiB`) and durations (`1m30s`) for people,
//! and the duration syntax of policies, CLI flags and API bodies (`5d`, `90s`, `1h30m`). Pure
//! functions with no crate imports.

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

/// Units named by humantime's calendar spans, which it counts as averages (a month is 30.44 days,
/// a year 365.25 days): a retention window should not be off by hours from what its author meant,
/// and `5M` (months) is one shift key away from `5m` (minutes), so these stay errors as before.
const CALENDAR_UNITS: &[&str] = &["M", "month", "months", "y", "yr", "yrs", "year", "years"];

/// Parses `30s`, `15m`, `12h`, `5d`, `2w` (also combined: `1d12h`, `1h 30m`).
///
/// The grammar is `humantime`'s: a widely used, well-tested crate that reports overflow instead of
/// saturating and takes whitespace and spelled-out units (`30min`, `2 days`), which our own loop
/// did not. Only the error texts are ours, and calendar units are refused (see
/// [`CALENDAR_UNITS`]).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: &str = "use s, m, h, d, w";
    let s = s.trim();
    let d = humantime::parse_duration(s).map_err(|e| match e {
        humantime::DurationError::Empty => "empty duration".to_string(),
        humantime::DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
            format!("invalid duration '{s}': missing unit after {value} ({UNITS})")
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("invalid duration '{s}': unknown unit '{unit}' ({UNITS})")
        }
        other => format!("invalid duration '{s}': {other}"),
    })?;
    // humantime takes the letters between numbers as the unit, so the same split finds them.
    if let Some(unit) = s
        .split(|c: char| !(c.is_ascii_alphabetic() || c == 'µ'))
        .find(|u| CALENDAR_UNITS.contains(u))
    {
        return Err(format!(
            "invalid duration '{s}': unit '{unit}' has no fixed length ({UNITS})"
        ));
    }
    Ok(d)
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
    fn parses_durations() {
        assert_eq!(parse_duration("5d").unwrap(), Duration::from_secs(432_000));
        assert_eq!(
            parse_duration("1d12h").unwrap(),
            Duration::from_secs(129_600)
        );
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5y").is_err());
    }

    /// Every form the shipped policies, the docs and the CLI use, and the messages of the errors.
    #[test]
    fn duration_forms_and_errors() {
        for (text, secs) in [
            ("3d", 3 * 86_400),
            ("90s", 90),
            ("12h", 12 * 3600),
            ("0s", 0),
            ("1w", 604_800),
            ("30m", 1800),
            ("1h30m", 5400),
            (" 2w ", 2 * 604_800),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        let err = |text: &str| parse_duration(text).unwrap_err();
        assert_eq!(err(""), "empty duration");
        assert_eq!(err("  "), "empty duration");
        assert_eq!(
            err("5"),
            "invalid duration '5': missing unit after 5 (use s, m, h, d, w)"
        );
        assert_eq!(
            err("5x"),
            "invalid duration '5x': unknown unit 'x' (use s, m, h, d, w)"
        );
        assert_eq!(
            err("5y"),
            "invalid duration '5y': unit 'y' has no fixed length (use s, m, h, d, w)"
        );
        assert!(err("1d 2M").contains("unit 'M' has no fixed length"));
        assert!(err("1 years").contains("unit 'years' has no fixed length"));
        assert!(err("x").starts_with("invalid duration 'x': "));
        assert!(err("-5d").starts_with("invalid duration '-5d': "));
        assert!(err("99999999999999999999d").starts_with("invalid duration '"));
        for text in ["", "5", "5x", "5y", "x", "-5d", "99999999999999999999d"] {
            let e = err(text);
            assert!(!e.contains('\n'), "{e}");
            assert!(
                !e.starts_with(|c: char| c.is_uppercase()),
                "{e} starts lowercase"
            );
        }
    }

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(536_870_912), "512.0MiB");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_secs(86_400 * 3)), "3d");
        assert_eq!(human_duration(Duration::ZERO), "0s");
    }
}
