//! Health triggers: a policy's `[compaction.trigger]` conditions (small files, small-file ratio,
//! average file size, delete files, delete-file ratio, manifests, snapshots since the last
//! compaction) and the cooldown (`min-interval`) between the compactions they start.
//!
//! Parsing collects problems like the rest of the policy ([`parse`]); evaluation ([`decide`]) is
//! pure: a table's [`Health`] (what the daemon's status refresh measured), the time of its last
//! compaction and the clock come in, a [`Verdict`] comes out. The scheduler turns a due verdict
//! into a fire; nothing here does I/O.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::tomlcheck::{Checker, join};
use crate::util::{human_duration, parse_duration};

/// The cooldown when `min-interval` is not set: Amoro's minor-optimizing interval.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(3600);

/// The shortest cooldown a policy may set: below it every status refresh could compact.
pub const MIN_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The keys of `[compaction.trigger]`.
pub const KEYS: &[&str] = &[
    "small-file-count",
    "small-file-ratio",
    "average-file-size-below-bytes",
    "delete-file-count",
    "delete-file-ratio",
    "manifest-count",
    "snapshot-count",
    "min-interval",
];

const SECTION: &str = "compaction.trigger";

/// One health condition; its name is the `reason` of the jobs it starts (`trigger:<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    SmallFiles,
    SmallFileRatio,
    AverageFileSize,
    DeleteFiles,
    DeleteFileRatio,
    Manifests,
    Snapshots,
}

impl Condition {
    /// Every condition, in the order they are evaluated (and the first met one is the reason).
    pub const ALL: [Condition; 7] = [
        Condition::DeleteFiles,
        Condition::DeleteFileRatio,
        Condition::SmallFiles,
        Condition::SmallFileRatio,
        Condition::AverageFileSize,
        Condition::Manifests,
        Condition::Snapshots,
    ];

    /// The job reason (and `reason` metric label) of a job this condition starts.
    pub fn reason(self) -> &'static str {
        match self {
            Condition::SmallFiles => "trigger:small-files",
            Condition::SmallFileRatio => "trigger:small-file-ratio",
            Condition::AverageFileSize => "trigger:average-file-size",
            Condition::DeleteFiles => "trigger:delete-files",
            Condition::DeleteFileRatio => "trigger:delete-file-ratio",
            Condition::Manifests => "trigger:manifests",
            Condition::Snapshots => "trigger:snapshots",
        }
    }
}

/// `[compaction.trigger]`: each condition is off unless set; any one met makes the table due,
/// once `min-interval` has passed since its last compaction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TriggerSettings {
    /// Live data files under the small-file threshold (Glue: > 100; Amoro minor: 12 fragments).
    pub small_file_count: Option<u64>,
    /// Small data files / data files, in (0, 1].
    pub small_file_ratio: Option<f64>,
    /// Due when the average data file is smaller than this.
    pub average_file_size_below_bytes: Option<u64>,
    /// Live delete files (Glue's `deleteFileThreshold`).
    pub delete_file_count: Option<u64>,
    /// Delete files / data files, above 0.
    pub delete_file_ratio: Option<f64>,
    /// Manifests of the current snapshot.
    pub manifest_count: Option<u64>,
    /// Snapshots committed since the last compaction (its `replace` snapshot).
    pub snapshot_count: Option<u64>,
    /// The cooldown: no compaction this condition starts within this of the last one.
    #[serde(serialize_with = "seconds")]
    pub min_interval: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// What the status refresh measured of a table, as the conditions read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    pub data_files: u64,
    pub small_files: u64,
    pub average_file_bytes: f64,
    pub delete_files: u64,
    pub manifests: u64,
    /// Snapshots in the current snapshot's ancestry after the last compaction's.
    pub snapshots_since_compaction: u64,
}

/// A condition that holds, with what was measured and the threshold it crossed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Met {
    pub condition: Condition,
    pub value: f64,
    pub threshold: f64,
}

impl fmt::Display for Met {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (v, t) = (self.value, self.threshold);
        match self.condition {
            Condition::SmallFiles => write!(f, "{v} small files >= {t}"),
            Condition::SmallFileRatio => write!(f, "small-file ratio {v:.2} >= {t}"),
            Condition::AverageFileSize => write!(f, "average file {v:.0} bytes < {t}"),
            Condition::DeleteFiles => write!(f, "{v} delete files >= {t}"),
            Condition::DeleteFileRatio => write!(f, "delete-file ratio {v:.2} >= {t}"),
            Condition::Manifests => write!(f, "{v} manifests >= {t}"),
            Condition::Snapshots => write!(f, "{v} snapshots since the last compaction >= {t}"),
        }
    }
}

/// Whether a table is due for a triggered compaction, and why (not).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A condition holds and the cooldown is over; the first met condition is the reason.
    Due { met: Vec<Met> },
    /// A condition holds but the table was compacted less than `min-interval` ago.
    CoolingDown { met: Vec<Met>, until_ms: i64 },
    /// No condition holds.
    Healthy,
}

impl Verdict {
    /// The reason a due table's job records.
    pub fn reason(&self) -> Option<Condition> {
        match self {
            Verdict::Due { met } => met.first().map(|m| m.condition),
            _ => None,
        }
    }
}

/// The conditions of `s` that `h` meets, in [`Condition::ALL`] order. Ratio and average
/// conditions need two data files: one file has nothing to merge with.
pub fn met(s: &TriggerSettings, h: &Health) -> Vec<Met> {
    let data = h.data_files as f64;
    let ratio = |n: u64| {
        if h.data_files == 0 {
            0.0
        } else {
            n as f64 / data
        }
    };
    let mergeable = h.data_files >= 2;
    let mut out = Vec::new();
    for c in Condition::ALL {
        let hit = match c {
            Condition::SmallFiles => s
                .small_file_count
                .map(|t| (h.small_files as f64, t as f64))
                .filter(|(v, t)| v >= t),
            Condition::SmallFileRatio => s
                .small_file_ratio
                .filter(|_| mergeable)
                .map(|t| (ratio(h.small_files), t))
                .filter(|(v, t)| v >= t),
            Condition::AverageFileSize => s
                .average_file_size_below_bytes
                .filter(|_| mergeable)
                .map(|t| (h.average_file_bytes, t as f64))
                .filter(|(v, t)| v < t),
            Condition::DeleteFiles => s
                .delete_file_count
                .map(|t| (h.delete_files as f64, t as f64))
                .filter(|(v, t)| v >= t),
            Condition::DeleteFileRatio => s
                .delete_file_ratio
                .filter(|_| h.data_files > 0)
                .map(|t| (ratio(h.delete_files), t))
                .filter(|(v, t)| v >= t),
            Condition::Manifests => s
                .manifest_count
                .map(|t| (h.manifests as f64, t as f64))
                .filter(|(v, t)| v >= t),
            Condition::Snapshots => s
                .snapshot_count
                .map(|t| (h.snapshots_since_compaction as f64, t as f64))
                .filter(|(v, t)| v >= t),
        };
        if let Some((value, threshold)) = hit {
            out.push(Met {
                condition: c,
                value,
                threshold,
            });
        }
    }
    out
}

/// Decides whether a table is due at `now_ms`: a condition of `s` holds for `h` and the last
/// compaction (`last_ms`, any trigger, ms since the epoch) is at least `min-interval` old. Pure.
pub fn decide(s: &TriggerSettings, h: &Health, last_ms: Option<i64>, now_ms: i64) -> Verdict {
    let met = met(s, h);
    if met.is_empty() {
        return Verdict::Healthy;
    }
    let cooldown = i64::try_from(s.min_interval.as_millis()).unwrap_or(i64::MAX);
    match last_ms.map(|l| l.saturating_add(cooldown)) {
        Some(until_ms) if until_ms > now_ms => Verdict::CoolingDown { met, until_ms },
        _ => Verdict::Due { met },
    }
}

/// Reads `[compaction.trigger]`; every problem is recorded in `cx` with its line.
pub fn parse(cx: &mut Checker, t: &toml::Table) -> TriggerSettings {
    cx.unknown_keys(SECTION, t, KEYS);
    let s = TriggerSettings {
        small_file_count: cx.uint(SECTION, t, "small-file-count", 1),
        small_file_ratio: ratio(cx, t, "small-file-ratio", 1.0),
        average_file_size_below_bytes: cx.uint(SECTION, t, "average-file-size-below-bytes", 1),
        delete_file_count: cx.uint(SECTION, t, "delete-file-count", 1),
        delete_file_ratio: ratio(cx, t, "delete-file-ratio", f64::INFINITY),
        manifest_count: cx.uint(SECTION, t, "manifest-count", 1),
        snapshot_count: cx.uint(SECTION, t, "snapshot-count", 1),
        min_interval: min_interval(cx, t),
    };
    let any = Condition::ALL.iter().any(|c| s.is_set(*c));
    let bad = KEYS
        .iter()
        .any(|k| t.contains_key(*k) && *k != "min-interval");
    if !any && !bad {
        cx.err(
            SECTION,
            format!(
                "[{SECTION}] sets no condition (one of: {})",
                KEYS[..7].join(", ")
            ),
        );
    }
    s
}

impl TriggerSettings {
    fn is_set(&self, c: Condition) -> bool {
        match c {
            Condition::SmallFiles => self.small_file_count.is_some(),
            Condition::SmallFileRatio => self.small_file_ratio.is_some(),
            Condition::AverageFileSize => self.average_file_size_below_bytes.is_some(),
            Condition::DeleteFiles => self.delete_file_count.is_some(),
            Condition::DeleteFileRatio => self.delete_file_ratio.is_some(),
            Condition::Manifests => self.manifest_count.is_some(),
            Condition::Snapshots => self.snapshot_count.is_some(),
        }
    }

    /// One line for people: the conditions set and the cooldown.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k} {v}"));
            }
        };
        push(
            "small-file-count",
            self.small_file_count.map(|v| v.to_string()),
        );
        push(
            "small-file-ratio",
            self.small_file_ratio.map(|v| v.to_string()),
        );
        push(
            "average-file-size-below-bytes",
            self.average_file_size_below_bytes.map(|v| v.to_string()),
        );
        push(
            "delete-file-count",
            self.delete_file_count.map(|v| v.to_string()),
        );
        push(
            "delete-file-ratio",
            self.delete_file_ratio.map(|v| v.to_string()),
        );
        push("manifest-count", self.manifest_count.map(|v| v.to_string()));
        push("snapshot-count", self.snapshot_count.map(|v| v.to_string()));
        parts.push(format!(
            "min-interval {}",
            human_duration(self.min_interval)
        ));
        parts.join(", ")
    }
}

/// A ratio in (0, `max`]: an integer or a float.
fn ratio(cx: &mut Checker, t: &toml::Table, key: &str, max: f64) -> Option<f64> {
    let path = join(SECTION, key);
    let v = match t.get(key)? {
        toml::Value::Float(f) => *f,
        toml::Value::Integer(n) => *n as f64,
        other => {
            cx.err(
                &path,
                format!("'{path}' must be a number, not {}", other.type_str()),
            );
            return None;
        }
    };
    if v > 0.0 && v <= max {
        Some(v)
    } else if max.is_finite() {
        cx.err(
            &path,
            format!("'{path}' must be above 0 and at most {max}, not {v}"),
        );
        None
    } else {
        cx.err(&path, format!("'{path}' must be above 0, not {v}"));
        None
    }
}

/// `min-interval`: a duration string of at least [`MIN_MIN_INTERVAL`].
fn min_interval(cx: &mut Checker, t: &toml::Table) -> Duration {
    let path = join(SECTION, "min-interval");
    let parsed = match t.get("min-interval") {
        None => return DEFAULT_MIN_INTERVAL,
        Some(toml::Value::String(s)) => parse_duration(s),
        Some(other) => Err(format!(
            "must be a duration string like \"30m\" or \"1h\", not {}",
            other.type_str()
        )),
    };
    match parsed {
        Ok(d) if d >= MIN_MIN_INTERVAL => d,
        Ok(d) => {
            cx.err(
                &path,
                format!("'{path}' must be at least 1s, not {}", human_duration(d)),
            );
            DEFAULT_MIN_INTERVAL
        }
        Err(e) => {
            cx.err(&path, format!("'{path}': {e}"));
            DEFAULT_MIN_INTERVAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TriggerSettings {
        TriggerSettings {
            small_file_count: None,
            small_file_ratio: None,
            average_file_size_below_bytes: None,
            delete_file_count: None,
            delete_file_ratio: None,
            manifest_count: None,
            snapshot_count: None,
            min_interval: Duration::from_secs(600),
        }
    }

    fn health() -> Health {
        Health {
            data_files: 10,
            small_files: 4,
            average_file_bytes: 1000.0,
            delete_files: 2,
            manifests: 3,
            snapshots_since_compaction: 5,
        }
    }

    /// One row per condition: the setting, a health that just meets it and one that just misses.
    #[test]
    fn each_condition_fires_at_its_threshold_and_not_below() {
        type Row = (
            Condition,
            fn(&mut TriggerSettings),
            fn(&mut Health),
            fn(&mut Health),
        );
        let rows: &[Row] = &[
            (
                Condition::SmallFiles,
                |s| s.small_file_count = Some(4),
                |_| {},
                |h| h.small_files = 3,
            ),
            (
                Condition::SmallFileRatio,
                |s| s.small_file_ratio = Some(0.4),
                |_| {},
                |h| h.small_files = 3,
            ),
            (
                Condition::AverageFileSize,
                |s| s.average_file_size_below_bytes = Some(1001),
                |_| {},
                |h| h.average_file_bytes = 1001.0,
            ),
            (
                Condition::DeleteFiles,
                |s| s.delete_file_count = Some(2),
                |_| {},
                |h| h.delete_files = 1,
            ),
            (
                Condition::DeleteFileRatio,
                |s| s.delete_file_ratio = Some(0.2),
                |_| {},
                |h| h.delete_files = 1,
            ),
            (
                Condition::Manifests,
                |s| s.manifest_count = Some(3),
                |_| {},
                |h| h.manifests = 2,
            ),
            (
                Condition::Snapshots,
                |s| s.snapshot_count = Some(5),
                |_| {},
                |h| h.snapshots_since_compaction = 4,
            ),
        ];
        assert_eq!(
            rows.len(),
            Condition::ALL.len(),
            "every condition has a row"
        );
        for (cond, set, meet, miss) in rows {
            let mut s = settings();
            set(&mut s);
            let mut h = health();
            meet(&mut h);
            let got = met(&s, &h);
            assert_eq!(got.len(), 1, "{cond:?}: {got:?}");
            assert_eq!(got[0].condition, *cond);
            assert_eq!(decide(&s, &h, None, 0).reason(), Some(*cond));
            let mut h = health();
            miss(&mut h);
            assert_eq!(decide(&s, &h, None, 0), Verdict::Healthy, "{cond:?} missed");
            assert!(
                s.describe().contains("min-interval 10m"),
                "{}",
                s.describe()
            );
        }
    }

    #[test]
    fn no_settings_never_fire_and_ratios_need_files_to_merge() {
        assert_eq!(decide(&settings(), &health(), None, 0), Verdict::Healthy);
        let mut s = settings();
        s.small_file_ratio = Some(0.5);
        s.average_file_size_below_bytes = Some(1 << 30);
        s.delete_file_ratio = Some(0.1);
        let one = Health {
            data_files: 1,
            small_files: 1,
            average_file_bytes: 10.0,
            ..Health::default()
        };
        assert!(
            met(&s, &one).is_empty(),
            "one file has nothing to merge with"
        );
        assert!(met(&s, &Health::default()).is_empty(), "an empty table");
    }

    #[test]
    fn the_first_met_condition_in_order_is_the_reason() {
        let mut s = settings();
        s.small_file_count = Some(1);
        s.delete_file_count = Some(1);
        s.snapshot_count = Some(1);
        let v = decide(&s, &health(), None, 0);
        let Verdict::Due { met } = &v else {
            panic!("{v:?}")
        };
        let got: Vec<Condition> = met.iter().map(|m| m.condition).collect();
        assert_eq!(
            got,
            [
                Condition::DeleteFiles,
                Condition::SmallFiles,
                Condition::Snapshots
            ]
        );
        assert_eq!(v.reason(), Some(Condition::DeleteFiles));
        assert_eq!(met[0].to_string(), "2 delete files >= 1");
    }

    #[test]
    fn the_cooldown_holds_a_met_condition_until_min_interval_passed() {
        let mut s = settings();
        s.small_file_count = Some(1);
        let h = health();
        let last = 1_000_000;
        let ten_min = 600_000;
        for (now, due) in [
            (last, false),
            (last + ten_min - 1, false),
            (last + ten_min, true),
            (last + 10 * ten_min, true),
        ] {
            let v = decide(&s, &h, Some(last), now);
            match v {
                Verdict::Due { .. } => assert!(due, "{now}"),
                Verdict::CoolingDown { until_ms, .. } => {
                    assert!(!due, "{now}");
                    assert_eq!(until_ms, last + ten_min);
                }
                Verdict::Healthy => panic!("met"),
            }
        }
        // Never compacted: due at once.
        assert!(matches!(decide(&s, &h, None, 0), Verdict::Due { .. }));
    }

    fn parse_text(text: &str) -> (TriggerSettings, Vec<String>) {
        let doc: toml::Table = text.parse().unwrap();
        let lines = crate::tomlcheck::key_lines(&format!("[compaction.trigger]\n{text}"));
        let mut cx = Checker::new("p.toml".into(), lines, 1);
        let s = parse(&mut cx, &doc);
        (s, cx.problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn parses_settings_and_reports_bad_values_on_their_lines() {
        let (s, problems) = parse_text(
            "small-file-count = 30\nsmall-file-ratio = 0.5\ndelete-file-ratio = 2\nmin-interval = \"15m\"\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.small_file_count, Some(30));
        assert_eq!(s.small_file_ratio, Some(0.5));
        assert_eq!(s.delete_file_ratio, Some(2.0));
        assert_eq!(s.min_interval, Duration::from_secs(900));
        let (s, _) = parse_text("manifest-count = 5\n");
        assert_eq!(s.min_interval, DEFAULT_MIN_INTERVAL);

        let (_, problems) = parse_text(
            "small-file-count = 0\nsmall-file-ratio = 1.5\nmin-interval = \"0s\"\nbogus = 1\nsnapshot-count = \"x\"\n",
        );
        assert_eq!(
            problems,
            [
                "p.toml:5: unknown key 'compaction.trigger.bogus' (expected one of: small-file-count, small-file-ratio, average-file-size-below-bytes, delete-file-count, delete-file-ratio, manifest-count, snapshot-count, min-interval)",
                "p.toml:2: 'compaction.trigger.small-file-count' must be at least 1, not 0",
                "p.toml:3: 'compaction.trigger.small-file-ratio' must be above 0 and at most 1, not 1.5",
                "p.toml:6: 'compaction.trigger.snapshot-count' must be an integer, not string",
                "p.toml:4: 'compaction.trigger.min-interval' must be at least 1s, not 0s",
            ]
        );
        let (_, problems) = parse_text("min-interval = \"1h\"\n");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("sets no condition"), "{problems:?}");
    }

    #[test]
    fn reasons_are_the_metric_label_values() {
        let reasons: Vec<&str> = Condition::ALL.iter().map(|c| c.reason()).collect();
        for r in &reasons {
            assert!(crate::telemetry::JOB_REASONS.contains(r), "{r}");
        }
    }
}
