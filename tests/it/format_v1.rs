//! Format v1 tables end to end (a SQL catalog, a local warehouse, tables written by PyIceberg with
//! `format-version = 1`, a policy without `format-version`): compaction commits a v1 `replace`
//! snapshot and keeps an append committed during the rewrite; then manifest rewrite, snapshot
//! expiry and orphan removal run on the same table. After each step the table is still v1 and
//! PyIceberg and DuckDB read the rows of a twin table that got the same appends. (Spark reading a
//! v1 table icemaint compacted, and the same files rewritten as Spark's `rewrite_data_files`:
//! `compaction_parity`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use icemaint::compaction::{self, Env};
use icemaint::fence::Fence;
use icemaint::telemetry::Metrics;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::compaction::connect;
use crate::daemon::{icemaint, write_config};
use crate::harness::{
    CatalogSpec, TestDir, Verify, make_table, path_str, pyiceberg_ops, table_info, verify,
};

const T: &str = "metrics.v1";
const TWIN: &str = "metrics.v1_twin";
/// Four partitions (2 orgs x 2 days) of 300-row appends.
const SHAPE: &[&str] = &["--rows", "300", "--orgs", "2", "--days", "2"];

/// No `format-version` and no per-kind sections: manual commands run with Spark's defaults.
const POLICY: &str = "version = 1\nname = \"v1-it\"\ntables = [\"metrics.*\"]\n";

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("tool thread")
}

/// `icemaint <args> --config C --json`: asserts exit 0 and status `succeeded`.
fn run(config: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--config", path_str(config), "--json"]);
    let (code, out, err) = icemaint(&a);
    assert_eq!(code, 0, "icemaint {a:?}:\n{out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"], "succeeded", "icemaint {a:?}: {v}");
    v
}

/// The table is still v1 and reads as `want` in PyIceberg and DuckDB.
fn check(spec: &CatalogSpec, want: &Verify, step: &str) -> Value {
    let info = table_info(spec, T);
    assert_eq!(info["format_version"], 1, "{step}: {info}");
    let v = verify(spec, T, true, false);
    assert!(v.agree, "{step}: readers disagree: {}", v.raw);
    assert_eq!(
        (v.rows, &v.checksum),
        (want.rows, &want.checksum),
        "{step}: rows"
    );
    info
}

fn data_paths(info: &Value) -> Vec<String> {
    info["data_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

/// `file:/x`, `file:///x` → `/x`.
fn local(uri: &str) -> PathBuf {
    let rest = uri.strip_prefix("file:").unwrap_or(uri);
    PathBuf::from(format!("/{}", rest.trim_start_matches('/')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_table_compacts_with_a_concurrent_append_then_prunes() {
    let started = Instant::now();
    let dir = TestDir::new("format-v1");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("v1-it.toml"), POLICY).unwrap();
    let config = write_config(&dir, &spec, &policies, "");

    let s = spec.clone();
    let (before, twin) = blocking(move || {
        let v1 = ["--format-version", "1"];
        make_table(&s, T, &[&["--appends", "8"][..], &v1, SHAPE].concat());
        // The twin gets the same 8 appends plus the 2 committed during the rewrite.
        make_table(&s, TWIN, &[&["--appends", "10"][..], &v1, SHAPE].concat());
        (table_info(&s, T), verify(&s, TWIN, true, false))
    })
    .await;
    assert_eq!(before["format_version"], 1, "{before}");

    // Plan, then an append by another writer, then the rewrite and commit.
    let catalog = connect(&spec).await;
    let opts = BTreeMap::from([("min-input-files".to_string(), "2".to_string())]);
    let prepared = compaction::prepare(&catalog, T, &BTreeMap::new(), &opts)
        .await
        .unwrap();
    assert_eq!(prepared.plan.groups.len(), 4, "{:?}", prepared.plan);
    let s = spec.clone();
    let appended = blocking(move || {
        let args = [
            &["--seed", "42", "--appends", "2", "--index", "8"][..],
            SHAPE,
        ]
        .concat();
        pyiceberg_ops(&s, T, "append", &args)
    })
    .await;
    let metrics = Metrics::new();
    let env = Env {
        catalog: &catalog,
        backend: catalog.committer().await.unwrap(),
        metrics: &metrics,
        cancel: CancellationToken::new(),
        job_id: "it-v1".to_string(),
        progress: Box::new(|_| {}),
        fence: &Fence::none(),
    };
    let report = compaction::execute(&env, prepared).await.unwrap();
    assert_eq!(
        (
            report.groups_committed,
            report.conflicts,
            report.files_read,
            report.files_written
        ),
        (4, 0, 8, 4),
        "{report:?}"
    );

    let s = spec.clone();
    let want = twin.clone();
    let after = blocking(move || check(&s, &want, "compaction")).await;
    // 4 compacted files + the 2 appended ones; the replace sits on top of the appends.
    assert_eq!(data_paths(&after).len(), 6, "{after}");
    let current = &after["current_snapshot_id"];
    let snap = after["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| &x["snapshot_id"] == current)
        .unwrap();
    assert_eq!(snap["operation"], "replace", "{snap}");
    assert_eq!(snap["parent_id"], appended["snapshot_id"], "{snap}");
    assert_eq!(snap["summary"]["added-data-files"], "4", "{snap}");
    assert_eq!(snap["summary"]["deleted-data-files"], "8", "{snap}");
    assert_eq!(snap["summary"]["total-data-files"], "6", "{snap}");

    // The CLI, with a policy that names no format version, compacts the partitions the appends
    // went to: one file per partition is left.
    let out = run(&config, &["compact", T, "--option", "min-input-files=2"]);
    assert!(
        out["result"]["groups_committed"].as_u64() > Some(0),
        "{out}"
    );
    let s = spec.clone();
    let want = twin.clone();
    let compacted = blocking(move || check(&s, &want, "compaction by the CLI")).await;
    assert_eq!(data_paths(&compacted).len(), 4, "{compacted}");
    // Every data file any snapshot had.
    let mut all: BTreeSet<String> = data_paths(&before).into_iter().collect();
    all.extend(data_paths(&after));

    let s = spec.clone();
    let cfg = config.clone();
    blocking(move || prune(&s, &cfg, &twin, &all, &compacted)).await;
    eprintln!(
        "[format-v1] finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Manifest rewrite, expiry and orphan removal on the compacted v1 table; `all`: every data file
/// the table ever had, `live`: the table now.
fn prune(spec: &CatalogSpec, config: &Path, want: &Verify, all: &BTreeSet<String>, live: &Value) {
    run(config, &["rewrite-manifests", T]);
    let info = check(spec, want, "rewrite-manifests");
    assert_eq!(data_paths(&info), data_paths(live));

    // Expiry keeps the current snapshot only: every replaced file goes, the live ones stay.
    let out = run(
        config,
        &["expire", T, "--older-than", "0s", "--retain-last", "1"],
    );
    let live: BTreeSet<String> = data_paths(live).into_iter().collect();
    let gone = all.difference(&live).count() as u64;
    assert_eq!(out["detail"]["deleted"]["data"]["files"], gone, "{out}");
    assert_eq!(out["detail"]["delete_failures"], 0, "{out}");
    let info = check(spec, want, "expire");
    for p in all {
        assert_eq!(local(p).exists(), live.contains(p), "{p}");
    }

    // An old unreferenced file is removed; a fresh one (a commit in flight) stays.
    let tdir = local(info["location"].as_str().unwrap());
    let old = tdir.join("data/junk-old.parquet");
    let young = tdir.join("data/junk-young.parquet");
    for p in [&old, &young] {
        std::fs::write(p, b"not referenced\n").unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(10 * 86_400))
        .unwrap();
    let out = run(config, &["remove-orphans", T]);
    assert_eq!(out["detail"]["files_deleted"], 1, "{out}");
    assert!(!old.exists() && young.exists(), "{out}");
    check(spec, want, "remove-orphans");
}
