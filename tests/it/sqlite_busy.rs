//! A second process holding the SQLite catalog's write lock (as Spark's `JdbcCatalog` and
//! PyIceberg's `SqlCatalog` do while they commit) delays icemaint's commits instead of failing
//! them with "database is locked".
//!
//! `hold_sqlite_lock.py` takes the lock with `BEGIN IMMEDIATE`, waits until icemaint has written
//! its next metadata file (the compare-and-swap `UPDATE` comes right after it and meets the lock),
//! holds on a few more seconds and rolls back. Both commit paths are covered:
//! - compaction commits through icemaint's own SQL backend; with a 300 ms busy timeout
//!   (`sqlite.busy-timeout-ms`) against a 3 s hold, its `UPDATE` meets SQLITE_BUSY several times
//!   and is retried with backoff;
//! - expiry commits through iceberg-catalog-sql, whose pool keeps sqlx's fixed 5 s busy timeout;
//!   a 7 s hold outlasts it, and the busy commit is retried from a fresh load.
//!
//! Each command must succeed, say in its log that it met the busy database (so the lock really
//! overlapped the commit), and PyIceberg must read the same rows and checksum afterwards.

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use serde_json::Value;

use crate::daemon::write_config;
use crate::harness::{CatalogSpec, Peers, TestDir, make_table, verify};

const T: &str = "db.busy";

const POLICY: &str = r#"version = 1
name = "busy-it"
tables = ["db.*"]

[compaction]
schedule = "0 0 0 1 1 *"

[expire]
"#;

/// `hold_sqlite_lock.py`, running; killed on drop if it has not finished.
struct Holder {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: PathBuf,
}

impl Holder {
    /// Starts the holder and returns once it holds the lock on `db`.
    fn lock(dir: &TestDir, db: &Path, watch: &Path, hold_s: f64) -> Holder {
        let peers = Peers::get();
        let stderr = dir.join(format!("holder-{hold_s}.stderr"));
        let mut child = Command::new(peers.python())
            .arg(peers.scripts_dir().join("hold_sqlite_lock.py"))
            .arg("--db")
            .arg(db)
            .arg("--watch")
            .arg(watch)
            .args(["--hold", &hold_s.to_string()])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut holder = Holder {
            child,
            stdout,
            stderr,
        };
        let first = holder.next_event();
        assert_eq!(first["event"], "locked", "{first}");
        holder
    }

    fn next_event(&mut self) -> Value {
        match self.stdout.next() {
            Some(Ok(line)) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("holder printed {line:?}: {e}")),
            other => panic!(
                "holder ended without a line ({other:?}): {}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            ),
        }
    }

    /// Waits for the holder to release the lock; returns its report.
    fn released(mut self) -> Value {
        let report = self.next_event();
        assert_eq!(report["event"], "released", "{report}");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "holder exited with {status}");
        report
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `icemaint <args> --config <config> --json` with info logs of icemaint's own modules;
/// returns (JSON, stderr), asserting success.
fn run(config: &Path, args: &[&str]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_icemaint"))
        .args(&args[..2])
        .arg("--config")
        .arg(config)
        .args(&args[2..])
        .arg("--json")
        .env("RUST_LOG", "warn,icemaint=info")
        .env("NO_COLOR", "1")
        .env_remove("ICEMAINT_CRASH_AT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (json, stderr)
}

/// The holder saw icemaint's new metadata file and kept the lock `hold_s` after it.
fn assert_overlapped(report: &Value, hold_s: f64) {
    assert!(
        report["seen"].is_string(),
        "icemaint wrote no metadata file while the lock was held: {report}"
    );
    assert!(
        report["held_after_seen_s"].as_f64().unwrap() >= hold_s,
        "{report}"
    );
}

#[test]
fn a_held_sqlite_catalog_lock_delays_commits_instead_of_failing_them() {
    let dir = TestDir::new("sqlite-busy");
    let db = dir.join("catalog.db");
    let spec = CatalogSpec::sql(&db, dir.uri("warehouse"));
    // One partition of 20 files: one compaction group, one commit.
    make_table(
        &spec,
        T,
        &["--appends", "20", "--rows", "200", "--partition", "none"],
    );
    let before = verify(&spec, T, false, false);
    assert!(before.agree, "{}", before.raw);
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("busy-it.toml"), POLICY).unwrap();
    let config = write_config(
        &dir,
        &spec,
        &policies,
        "\n[catalog.properties]\n\"sqlite.busy-timeout-ms\" = \"300\"\n",
    );
    let metadata = dir.join("warehouse/db/busy/metadata");
    assert!(metadata.is_dir(), "{}", metadata.display());

    // Compaction through icemaint's SQL backend, against a 3 s hold.
    let holder = Holder::lock(&dir, &db, &metadata, 3.0);
    let (compacted, log) = run(&config, &["compact", T, "--option", "min-input-files=2"]);
    let report = holder.released();
    assert_overlapped(&report, 3.0);
    assert_eq!(compacted["status"], "succeeded", "{compacted}\n{log}");
    assert_eq!(compacted["result"]["groups_committed"], 1, "{compacted}");
    assert_eq!(
        compacted["result"]["conflicts"], 0,
        "busy is no conflict: {compacted}"
    );
    assert!(
        log.contains("catalog database busy; retrying the commit"),
        "the commit never met the lock (busy timeout not applied?): {report}\n{log}"
    );
    let after_compaction = verify(&spec, T, false, false);
    assert_eq!(
        (after_compaction.rows, &after_compaction.checksum),
        (before.rows, &before.checksum),
        "{}",
        after_compaction.raw
    );
    assert_eq!(after_compaction.data_files, 1, "{}", after_compaction.raw);

    // Expiry through iceberg-catalog-sql, against a hold longer than its 5 s busy timeout.
    let holder = Holder::lock(&dir, &db, &metadata, 7.0);
    let (expired, log) = run(
        &config,
        &["expire", T, "--older-than", "0s", "--retain-last", "1"],
    );
    let report = holder.released();
    assert_overlapped(&report, 7.0);
    assert_eq!(expired["status"], "succeeded", "{expired}\n{log}");
    assert_eq!(expired["detail"]["snapshots_expired"], 20, "{expired}");
    assert!(
        log.contains("catalog database busy; the commit did not apply"),
        "the expiry commit never met the lock: {report}\n{log}"
    );
    let after_expiry = verify(&spec, T, false, false);
    assert_eq!(
        (after_expiry.rows, &after_expiry.checksum),
        (before.rows, &before.checksum),
        "{}",
        after_expiry.raw
    );
    assert_eq!(after_expiry.snapshots, 1, "{}", after_expiry.raw);
}
