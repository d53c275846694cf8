//! Crash points for fault-injection tests: with `ICEMAINT_CRASH_AT=<point>` in its environment
//! the process aborts (SIGABRT: no destructors, no buffered writes, no lock release, like a
//! kill -9 or an OOM kill) the moment it reaches that point. The integration tests use them to
//! show that a crash between any two steps of a commit or a cleanup leaves the table readable,
//! with the same rows, and that a later run finishes the work (`tests/it/crash.rs`).
//!
//! With `ICEMAINT_STOP_AT=<point>` the process instead stops itself (SIGSTOP) the first time it
//! reaches that point, as a GC pause or a frozen VM would, and carries on when continued
//! (SIGCONT): the replica tests pause a job past its lease there (`tests/it/replicas.rs`).
//!
//! Reaching a point costs one comparison against a value read once; without the variable
//! nothing ever happens, so the points stay compiled into release builds, where crashes happen.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable naming the point to crash at.
pub const ENV: &str = "ICEMAINT_CRASH_AT";

/// The environment variable naming the point to stop at, once.
pub const STOP_ENV: &str = "ICEMAINT_STOP_AT";

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

fn from_env(var: &str) -> Option<CrashPoint> {
    std::env::var(var)
        .ok()
        .as_deref()
        .and_then(CrashPoint::parse)
}

/// The crash point selected by the environment, read once.
fn selected() -> Option<CrashPoint> {
    static SELECTED: OnceLock<Option<CrashPoint>> = OnceLock::new();
    *SELECTED.get_or_init(|| from_env(ENV))
}

/// The stop point selected by the environment, read once.
fn selected_stop() -> Option<CrashPoint> {
    static SELECTED: OnceLock<Option<CrashPoint>> = OnceLock::new();
    *SELECTED.get_or_init(|| from_env(STOP_ENV))
}

/// Aborts the process when `point` is the selected crash point; stops it (once) when it is the
/// selected stop point.
pub fn reached(point: CrashPoint) {
    if selected() == Some(point) {
        eprintln!("icemaint: crashing at {} ({ENV})", point.name());
        std::process::abort();
    }
    static STOPPED: AtomicBool = AtomicBool::new(false);
    if selected_stop() == Some(point) && !STOPPED.swap(true, Ordering::SeqCst) {
        eprintln!(
            "icemaint: stopping at {} ({STOP_ENV}); SIGCONT continues",
            point.name()
        );
        // SAFETY: raise(3) has no preconditions; SIGSTOP stops every thread of the process
        // until a SIGCONT, which is the pause this point exists to simulate.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

/// Checks the environment at start-up: a misspelt point would otherwise make a fault-injection
/// run pass without ever crashing (or stopping).
pub fn check_env() -> Result<(), String> {
    for var in [ENV, STOP_ENV] {
        if let Ok(v) = std::env::var(var)
            && CrashPoint::parse(&v).is_none()
        {
            let known: Vec<&str> = CrashPoint::ALL.iter().map(|p| p.name()).collect();
            return Err(format!(
                "{var}={v:?} is not a crash point (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
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
