//! Crash points for fault-injection tests: with `ICEMAINT_CRASH_AT=<point>` in its environment
//! the process aborts (SIGABRT: no destructors, no buffered writes, no lock release, like a
//! kill -9 or an OOM kill) the moment it reaches that point. The integration tests use them to
//! show that a crash between any two steps of a commit or a cleanup leaves the table readable,
//! with the same rows, and that a later run finishes the work (`tests/it/crash.rs`).
//!
//! Reaching a point costs one comparison against a value read once; without the variable
//! nothing ever happens, so the points stay compiled into release builds, where crashes happen.

use std::sync::OnceLock;

/// The environment variable naming the point to crash at.
pub const ENV: &str = "ICEMAINT_CRASH_AT";

/// A step boundary at which a crash is worth proving harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Compaction: every group's files are written, nothing is committed yet.
    CompactionRewritten,
    /// A `replace` commit: manifests and manifest list are written, the catalog was not asked.
    CommitBeforeCatalog,
    /// A `replace` commit: the catalog accepted it, the job is not recorded as finished.
    CommitAfterCatalog,
    /// Snapshot expiry: the catalog dropped the snapshots, none of their files is deleted yet.
    ExpireAfterCommit,
    /// A cleanup (expiry or orphan removal): the first file is deleted, the others are not.
    DeleteAfterFirst,
}

impl CrashPoint {
    /// Every point, for validation and listing.
    pub const ALL: [CrashPoint; 5] = [
        CrashPoint::CompactionRewritten,
        CrashPoint::CommitBeforeCatalog,
        CrashPoint::CommitAfterCatalog,
        CrashPoint::ExpireAfterCommit,
        CrashPoint::DeleteAfterFirst,
    ];

    /// The value of [`ENV`] that selects this point.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::CompactionRewritten => "compaction.rewritten",
            CrashPoint::CommitBeforeCatalog => "commit.before-catalog",
            CrashPoint::CommitAfterCatalog => "commit.after-catalog",
            CrashPoint::ExpireAfterCommit => "expire.after-commit",
            CrashPoint::DeleteAfterFirst => "delete.after-first",
        }
    }

    fn parse(s: &str) -> Option<CrashPoint> {
        CrashPoint::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// The point selected by the environment, read once.
fn selected() -> Option<CrashPoint> {
    static SELECTED: OnceLock<Option<CrashPoint>> = OnceLock::new();
    *SELECTED.get_or_init(|| {
        std::env::var(ENV)
            .ok()
            .as_deref()
            .and_then(CrashPoint::parse)
    })
}

/// Aborts the process when `point` is the selected crash point.
pub fn reached(point: CrashPoint) {
    if selected() == Some(point) {
        eprintln!("icemaint: crashing at {} ({ENV})", point.name());
        std::process::abort();
    }
}

/// Checks the environment at start-up: a misspelt point would otherwise make a fault-injection
/// run pass without ever crashing.
pub fn check_env() -> Result<(), String> {
    match std::env::var(ENV) {
        Ok(v) if CrashPoint::parse(&v).is_none() => {
            let known: Vec<&str> = CrashPoint::ALL.iter().map(|p| p.name()).collect();
            Err(format!(
                "{ENV}={v:?} is not a crash point (known: {})",
                known.join(", ")
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        for p in CrashPoint::ALL {
            assert_eq!(CrashPoint::parse(p.name()), Some(p));
        }
        let mut names: Vec<&str> = CrashPoint::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CrashPoint::ALL.len());
        assert_eq!(CrashPoint::parse("commit.before"), None);
    }
}
