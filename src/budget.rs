//! The daemon's budget across tables: at most `max-concurrent-jobs` scheduler jobs at once and
//! at most `max-rewritten-bytes-per-hour` bytes rewritten by compactions in the last hour. When
//! more jobs are due than the budget allows, [`admit`] starts the most valuable first (jobs that
//! rewrite no data, then compactions by small files removed per byte rewritten, then the oldest)
//! and holds the rest, each with why.
//!
//! Pure: the caller measures what runs and what was rewritten, and passes them in.

use std::cmp::Ordering;

use serde::Serialize;

/// The limits (`[server]` of the daemon config); `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub max_concurrent_jobs: Option<usize>,
    pub max_rewritten_bytes_per_hour: Option<u64>,
}

/// A job waiting to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<K> {
    pub key: K,
    /// Rewrites data (a compaction): counted against the hourly bytes and ordered by value.
    pub rewrites: bool,
    /// What it is worth per byte rewritten ([`value`]); higher first.
    pub value: f64,
    /// About what it rewrites.
    pub estimated_bytes: u64,
    /// When it became due (ms): among equals, the oldest first.
    pub since_ms: i64,
}

/// Why a candidate waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Held {
    /// `max-concurrent-jobs` jobs already run.
    MaxConcurrentJobs,
    /// The last hour's rewritten bytes (plus this job's estimate) exceed the hourly budget.
    MaxRewrittenBytesPerHour,
}

impl Held {
    pub fn as_str(self) -> &'static str {
        match self {
            Held::MaxConcurrentJobs => "max-concurrent-jobs",
            Held::MaxRewrittenBytesPerHour => "max-rewritten-bytes-per-hour",
        }
    }
}

/// What compacting a table is worth per byte rewritten: the files it removes (small files
/// merged into target-size files, plus the delete files it applies) over the bytes it rewrites.
pub fn value(small_files: u64, small_file_bytes: u64, target_bytes: u64, delete_files: u64) -> f64 {
    let target = target_bytes.max(1);
    let outputs = small_file_bytes
        .div_ceil(target)
        .max(u64::from(small_files > 0));
    let removed = small_files.saturating_sub(outputs) + delete_files;
    removed as f64 / small_file_bytes.max(1) as f64
}

/// The order candidates start in: jobs that rewrite no data first, then by value (highest
/// first), then the oldest, then by key, so the order is total and stable.
pub fn order<K: Ord>(c: &mut [Candidate<K>]) {
    c.sort_by(|a, b| {
        a.rewrites
            .cmp(&b.rewrites)
            .then_with(|| b.value.partial_cmp(&a.value).unwrap_or(Ordering::Equal))
            .then_with(|| a.since_ms.cmp(&b.since_ms))
            .then_with(|| a.key.cmp(&b.key))
    });
}

/// What [`admit`] decided: the candidates that start now, in order, and those that wait, each
/// with why.
pub type Admitted<K> = (Vec<Candidate<K>>, Vec<(Candidate<K>, Held)>);

/// Splits `candidates` into those that start now and those that wait (with why), given the jobs
/// `running` now and the bytes rewritten in the last hour (`spent`). A compaction starts while
/// the hour's bytes with its estimate fit the budget, or when nothing was rewritten in the hour
/// (so one job larger than the whole budget still runs, and then the hour is spent).
pub fn admit<K: Ord>(
    mut candidates: Vec<Candidate<K>>,
    budget: Budget,
    running: usize,
    spent: u64,
) -> Admitted<K> {
    order(&mut candidates);
    let mut slots = budget
        .max_concurrent_jobs
        .map_or(usize::MAX, |m| m.saturating_sub(running));
    let mut spent = spent;
    let (mut start, mut wait) = (Vec::new(), Vec::new());
    // The hourly bytes are checked first: when both hold, they are the longer wait.
    for c in candidates {
        if c.rewrites
            && let Some(max) = budget.max_rewritten_bytes_per_hour
            && spent > 0
            && spent.saturating_add(c.estimated_bytes) > max
        {
            wait.push((c, Held::MaxRewrittenBytesPerHour));
            continue;
        }
        if slots == 0 {
            wait.push((c, Held::MaxConcurrentJobs));
            continue;
        }
        if c.rewrites {
            spent = spent.saturating_add(c.estimated_bytes);
        }
        slots -= 1;
        start.push(c);
    }
    (start, wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(key: &str, rewrites: bool, value: f64, bytes: u64, since: i64) -> Candidate<String> {
        Candidate {
            key: key.into(),
            rewrites,
            value,
            estimated_bytes: bytes,
            since_ms: since,
        }
    }

    fn keys<T>(c: &[T], key: impl Fn(&T) -> &str) -> Vec<String> {
        c.iter().map(|c| key(c).to_string()).collect()
    }

    #[test]
    fn value_is_files_removed_per_byte_rewritten() {
        let mib = 1 << 20;
        // 100 files of 1 MiB into 64 MiB targets: 98 removed per 100 MiB.
        let many = value(100, 100 * mib, 64 * mib, 0);
        assert!((many - 98.0 / (100.0 * mib as f64)).abs() < 1e-15, "{many}");
        // 4 files of 16 MiB: 3 removed per 64 MiB — worth less per byte.
        let few_big = value(4, 64 * mib, 64 * mib, 0);
        assert!(few_big < many);
        // Nothing small: nothing to remove.
        assert_eq!(value(0, 0, 64 * mib, 0), 0.0);
        // One small file alone removes nothing, unless it carries delete files.
        assert_eq!(value(1, mib, 64 * mib, 0), 0.0);
        assert!(value(1, mib, 64 * mib, 3) > 0.0);
    }

    #[test]
    fn order_is_cheap_jobs_then_value_then_age() {
        let mut c = vec![
            cand("low", true, 1.0, 10, 0),
            cand("old-high", true, 5.0, 10, 1),
            cand("new-high", true, 5.0, 10, 2),
            cand("expire", false, 0.0, 0, 9),
            cand("mid", true, 3.0, 10, 0),
        ];
        order(&mut c);
        assert_eq!(
            keys(&c, |c| &c.key),
            ["expire", "old-high", "new-high", "mid", "low"]
        );
    }

    /// A table of budgets and what starts: the most valuable first, the rest wait with why.
    #[test]
    fn admit_starts_the_most_valuable_within_the_budget() {
        let all = || {
            vec![
                cand("a", true, 1.0, 40, 0),
                cand("b", true, 9.0, 40, 0),
                cand("c", true, 5.0, 40, 0),
            ]
        };
        let unlimited = Budget::default();
        let one = Budget {
            max_concurrent_jobs: Some(1),
            ..Budget::default()
        };
        let bytes = |max| Budget {
            max_rewritten_bytes_per_hour: Some(max),
            ..Budget::default()
        };
        type Row = (
            Budget,
            usize,
            u64,
            &'static [&'static str],
            &'static [(&'static str, Held)],
        );
        let rows: &[Row] = &[
            (unlimited, 5, 1 << 40, &["b", "c", "a"], &[]),
            (
                one,
                0,
                0,
                &["b"],
                &[
                    ("c", Held::MaxConcurrentJobs),
                    ("a", Held::MaxConcurrentJobs),
                ],
            ),
            (
                one,
                1,
                0,
                &[],
                &[
                    ("b", Held::MaxConcurrentJobs),
                    ("c", Held::MaxConcurrentJobs),
                    ("a", Held::MaxConcurrentJobs),
                ],
            ),
            // 100 bytes an hour, none spent: b and c fit (80), a would make 120.
            (
                bytes(100),
                0,
                0,
                &["b", "c"],
                &[("a", Held::MaxRewrittenBytesPerHour)],
            ),
            // Nothing spent yet: a job larger than the whole budget still runs, alone.
            (
                bytes(10),
                0,
                0,
                &["b"],
                &[
                    ("c", Held::MaxRewrittenBytesPerHour),
                    ("a", Held::MaxRewrittenBytesPerHour),
                ],
            ),
            // Both limits: the bytes are named first (the longer wait).
            (
                Budget {
                    max_concurrent_jobs: Some(1),
                    max_rewritten_bytes_per_hour: Some(100),
                },
                0,
                50,
                &["b"],
                &[
                    ("c", Held::MaxRewrittenBytesPerHour),
                    ("a", Held::MaxRewrittenBytesPerHour),
                ],
            ),
            // The hour is spent: every compaction waits.
            (
                bytes(100),
                0,
                100,
                &[],
                &[
                    ("b", Held::MaxRewrittenBytesPerHour),
                    ("c", Held::MaxRewrittenBytesPerHour),
                    ("a", Held::MaxRewrittenBytesPerHour),
                ],
            ),
        ];
        for (i, (budget, running, spent, start, wait)) in rows.iter().enumerate() {
            let (s, w) = admit(all(), *budget, *running, *spent);
            assert_eq!(keys(&s, |c| &c.key), *start, "row {i}");
            let got: Vec<(String, Held)> = w.into_iter().map(|(c, h)| (c.key, h)).collect();
            let want: Vec<(String, Held)> = wait.iter().map(|(k, h)| (k.to_string(), *h)).collect();
            assert_eq!(got, want, "row {i}");
        }
        // Jobs that rewrite nothing are never held by the bytes budget.
        let (s, _) = admit(vec![cand("expire", false, 0.0, 0, 0)], bytes(1), 0, 1 << 30);
        assert_eq!(s.len(), 1);
    }
}
