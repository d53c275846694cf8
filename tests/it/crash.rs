//! Crashes between the steps of every maintenance that writes: `icemaint` runs with
//! `ICEMAINT_CRASH_AT=<point>` (see `src/crashpoint.rs`) and aborts there, without cleanup,
//! lock release or job bookkeeping, as after a kill -9 or an OOM kill. After each crash the table
//! must read the same rows through PyIceberg and DuckDB, in the state of the last commit that
//! landed; later runs (with a fresh state store, as after the crashed run's lock lease expired)
//! finish the work, and orphan removal leaves exactly the live data files on disk.
//!
//! The sequence on one table (20 partitions x 2 files; a SQL catalog and the REST catalog, both
//! with a local warehouse):
//! compaction crashed after rewriting, before the catalog commit and after it; a normal run is
//! then a no-op; expiry crashed after its commit (files not deleted); orphan removal crashed
//! after its first deletion; orphan removal again.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::daemon::write_config;
use crate::harness::{
    CatalogSpec, RestCatalogServer, TestDir, Verify, make_table, table_info, verify,
};

const T: &str = "db.crash";

const POLICY: &str = r#"version = 1
name = "crash-it"
tables = ["db.*"]

[compaction]
schedule = "0 0 0 1 1 *"
strategy = "binpack"

[expire]

[orphans]
"#;

const SIGABRT: i32 = 6;

struct Fx {
    dir: TestDir,
    spec: CatalogSpec,
    policies: PathBuf,
    runs: usize,
    _rest: Option<RestCatalogServer>,
}

impl Fx {
    /// A config with a state store of its own: the crashed runs keep their table lease in
    /// theirs (until it expires), which must not hold up the next step.
    fn fresh_config(&mut self) -> PathBuf {
        self.runs += 1;
        let base = write_config(&self.dir, &self.spec, &self.policies, "");
        let text = std::fs::read_to_string(&base)
            .unwrap()
            .replace("state.db", &format!("state-{}.db", self.runs));
        let path = self.dir.join(format!("icemaint-{}.toml", self.runs));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&mut self, args: &[&str]) -> Command {
        let config = self.fresh_config();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_icemaint"));
        cmd.args(&args[..2])
            .arg("--config")
            .arg(&config)
            .args(&args[2..])
            .arg("--json")
            .env("RUST_LOG", "warn")
            .env_remove("ICEMAINT_CRASH_AT");
        cmd
    }

    /// Runs `icemaint <kind> <table> [args]` crashing at `point`; asserts it aborted there.
    fn crash(&mut self, args: &[&str], point: &str) {
        let out = self
            .command(args)
            .env("ICEMAINT_CRASH_AT", point)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "{args:?} should have crashed at {point}: {}\n{stderr}",
            out.status
        );
        assert!(stderr.contains(&format!("crashing at {point}")), "{stderr}");
    }

    /// Runs `icemaint <kind> <table> [args]` to completion; returns its JSON.
    fn run(&mut self, args: &[&str]) -> Value {
        let out = self.command(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    fn info(&self) -> Value {
        table_info(&self.spec, T)
    }

    fn verify(&self) -> Verify {
        let v = verify(&self.spec, T, true, false);
        assert!(v.agree, "readers disagree: {}", v.raw);
        v
    }

    fn files_with_suffix(&self, suffix: &str) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        walk(&self.dir.join("warehouse"), suffix, &mut out);
        out
    }
}

fn walk(dir: &Path, suffix: &str, out: &mut BTreeSet<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.insert(p);
        }
    }
}

fn live_data_files(info: &Value) -> BTreeSet<PathBuf> {
    info["data_files"]
        .as_array()
        .expect("data_files")
        .iter()
        .map(|f| {
            let loc = f["path"].as_str().unwrap();
            let path = loc.strip_prefix("file:").unwrap_or(loc);
            PathBuf::from(format!("/{}", path.trim_start_matches('/')))
        })
        .collect()
}

fn assert_same_rows(before: &Verify, after: &Verify, step: &str) {
    assert_eq!(
        (after.rows, &after.checksum),
        (before.rows, &before.checksum),
        "rows changed after {step}: {}",
        after.raw
    );
}

#[test]
fn a_crash_between_any_two_steps_loses_nothing_sql_catalog() {
    let dir = TestDir::new("crash-sql");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    crash_sequence(dir, spec, None);
}

#[test]
fn a_crash_between_any_two_steps_loses_nothing_rest_catalog() {
    let dir = TestDir::new("crash-rest");
    let rest = RestCatalogServer::start(&dir.join("warehouse"));
    let spec = CatalogSpec::rest(rest.uri());
    crash_sequence(dir, spec, Some(rest));
}

/// The whole sequence on `spec`, whose warehouse is `dir/warehouse`.
fn crash_sequence(dir: TestDir, spec: CatalogSpec, rest: Option<RestCatalogServer>) {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("crash-it.toml"), POLICY).unwrap();
    let mut fx = Fx {
        dir,
        spec,
        policies,
        runs: 0,
        _rest: rest,
    };
    make_table(&fx.spec, T, &["--appends", "40", "--rows", "1000"]);
    let rows = fx.verify();
    let before = fx.info();
    let start = before["current_snapshot_id"].clone();
    let snapshots_before = before["snapshots"].as_array().unwrap().len();
    assert_eq!(before["data_files"].as_array().unwrap().len(), 40);
    let unchanged = |fx: &Fx, step: &str| {
        let now = fx.info();
        assert_eq!(now["current_snapshot_id"], start, "after {step}");
        assert_eq!(now["snapshots"].as_array().unwrap().len(), snapshots_before);
        assert_same_rows(&rows, &fx.verify(), step);
    };
    let compact = ["compact", T, "--option", "min-input-files=2"];

    // Compaction, crashed with every group written but nothing committed: the table is as it was;
    // the written files are unreferenced.
    let parquet_before = fx.files_with_suffix(".parquet");
    fx.crash(&compact, "compaction.rewritten");
    unchanged(&fx, "a crash before the commit");
    let leftovers = fx.files_with_suffix(".parquet").len() - parquet_before.len();
    assert_eq!(
        leftovers, 20,
        "one output per partition written, then the crash"
    );

    // Crashed with the manifests and manifest list written, the catalog not asked.
    let lists_before = fx.files_with_suffix(".avro").len();
    fx.crash(&compact, "commit.before-catalog");
    unchanged(&fx, "a crash before the catalog commit");
    assert!(
        fx.files_with_suffix(".avro").len() > lists_before,
        "the commit's manifests were written before the crash"
    );

    // Crashed right after the catalog accepted the commit: the replace is the current snapshot
    // and readers see the compacted table with the same rows.
    fx.crash(&compact, "commit.after-catalog");
    let after = fx.info();
    let current = after["current_snapshot_id"].clone();
    assert_ne!(current, start);
    let snap = after["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["snapshot_id"] == current)
        .unwrap();
    assert_eq!(snap["operation"], "replace", "{snap}");
    assert_eq!(snap["parent_id"], start, "{snap}");
    assert_eq!(after["data_files"].as_array().unwrap().len(), 20);
    let compacted = fx.verify();
    assert_same_rows(&rows, &compacted, "a crash after the catalog commit");
    assert_eq!(compacted.data_files, 20);

    // The work is done: a normal run finds nothing to compact.
    let again = fx.run(&compact);
    assert_eq!(again["status"], "skipped", "{again}");

    // Expiry crashed after its commit: the snapshots are gone from the metadata, their files are
    // still on disk, the current snapshot reads the same.
    let parquet_all = fx.files_with_suffix(".parquet");
    let expire = ["expire", T, "--older-than", "0s", "--retain-last", "1"];
    fx.crash(&expire, "expire.after-commit");
    let expired = fx.info();
    assert_eq!(expired["current_snapshot_id"], current);
    assert_eq!(expired["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(fx.files_with_suffix(".parquet"), parquet_all);
    assert_same_rows(&rows, &fx.verify(), "a crash after the expiry commit");

    // What the crashed expiry did not delete is orphaned now. Orphan removal crashed after its
    // first deletion, then run again: only the live data files remain and the rows are the same.
    let orphans = ["remove-orphans", T, "--older-than", "0s", "--force"];
    fx.crash(&orphans, "delete.after-first");
    let on_disk = fx.files_with_suffix(".parquet");
    assert!(on_disk.len() < parquet_all.len(), "one file was deleted");
    assert_same_rows(&rows, &fx.verify(), "a crash during orphan removal");
    let done = fx.run(&orphans);
    assert_eq!(done["status"], "succeeded", "{done}");
    let live = live_data_files(&fx.info());
    assert_eq!(live.len(), 20);
    assert_eq!(
        fx.files_with_suffix(".parquet"),
        live,
        "only the live data files remain on disk"
    );
    let last = fx.verify();
    assert_same_rows(&rows, &last, "orphan removal");
    assert_eq!(last.data_files, 20);
}
