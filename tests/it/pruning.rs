//! Metadata pruning end to end on real catalogs and storage, checked by third-party readers:
//! snapshot expiry after a replace (Spark `rewrite_data_files` on a SQL catalog, PyIceberg
//! copy-on-write deletes on a REST catalog and on s3s-fs) frees exactly the replaced files' bytes while PyIceberg and
//! DuckDB read the same rows and every retained snapshot stays readable; orphan removal deletes
//! old unreferenced files only (age window, hidden files, sibling directories, dry run); the HTTP
//! endpoints and CLI errors; and a commit whose outcome is unknown deletes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::daemon::{Daemon, icemaint, write_config};
use crate::harness::{
    CatalogSpec, RestCatalogServer, S3Server, TestDir, make_table, pyiceberg_ops, table_info, tool,
    verify,
};
use icemaint::fence::Fence;

const T: &str = "db.events";
const DAY: Duration = Duration::from_secs(86_400);

/// A policy directory selecting `db.*` with `[expire]` and `[orphans]` sections (defaults), and
/// `other.*` with neither (manual runs there use Spark's defaults).
fn policies(dir: &TestDir) -> PathBuf {
    let p = dir.join("policies");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("pruning.toml"),
        "version = 1\nname = \"pruning\"\ntables = [\"db.*\"]\n[expire]\n[orphans]\n",
    )
    .unwrap();
    std::fs::write(
        p.join("plain.toml"),
        "version = 1\nname = \"plain\"\ntables = [\"other.*\"]\n",
    )
    .unwrap();
    p
}

/// Every regular file under `dir` with its size.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.insert(e.path(), e.metadata().unwrap().len());
            }
        }
    }
    out
}

fn sum_where(files: &BTreeMap<PathBuf, u64>, pred: impl Fn(&Path) -> bool) -> u64 {
    files.iter().filter(|(p, _)| pred(p)).map(|(_, s)| *s).sum()
}

fn is_data(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "parquet")
}

/// `file:/x`, `file:///x` → `/x`.
fn local(uri: &str) -> PathBuf {
    let rest = uri.strip_prefix("file:").unwrap_or(uri);
    PathBuf::from(format!("/{}", rest.trim_start_matches('/')))
}

/// Runs `icemaint <args> --json`; returns (exit code, JSON, stderr).
fn icemaint_json(args: &[&str]) -> (i32, Value, String) {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out, err) = icemaint(&a);
    let v = serde_json::from_str(&out).unwrap_or_else(|_| Value::String(out.clone()));
    (code, v, err)
}

/// Live data files of the current snapshot: path → size.
fn live_data(info: &Value) -> BTreeMap<String, u64> {
    info["data_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `time_travel.py`: snapshot id → (rows, checksum), asserting every read succeeded.
fn time_travel(spec: &CatalogSpec) -> BTreeMap<i64, (u64, String)> {
    let v = tool("time_travel.py", spec, T, &[]);
    assert_eq!(v["ok"], true, "a snapshot could not be read: {v}");
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["snapshot_id"].as_i64().unwrap(),
                (
                    s["rows"].as_u64().unwrap(),
                    s["checksum"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// How the replace snapshot is made.
enum Replace {
    /// `CALL system.rewrite_data_files` (binpack, min-input-files 2).
    Spark,
    /// PyIceberg copy-on-write delete: the files holding matching rows are rewritten.
    PyIcebergDelete,
}

/// One expiry scenario.
struct Scenario {
    replace: Replace,
    /// Append once more after the replace (so more than one snapshot is retained).
    extra_append: bool,
    retain_last: u32,
    /// Let the writers trim the metadata log without deleting, then turn on
    /// `write.metadata.delete-after-commit.enabled`: expiry removes the old metadata files.
    metadata_cleanup: bool,
}

/// Makes `T` (6 appends), replaces its files, then runs `icemaint expire --retain-last N
/// --older-than 0s` and checks storage, readers and time travel. `table_dir` maps a location to
/// the local path holding it.
fn expire_after_replace(
    spec: &CatalogSpec,
    dir: &TestDir,
    sc: Scenario,
    table_dir: impl Fn(&str) -> PathBuf,
) {
    let mut props = vec!["--appends", "6", "--rows", "200", "--partition", "none"];
    if sc.metadata_cleanup {
        props.extend(["--property", "write.metadata.previous-versions-max=2"]);
    }
    if matches!(sc.replace, Replace::PyIcebergDelete) {
        props.extend(["--property", "write.delete.mode=copy-on-write"]);
    }
    make_table(spec, T, &props);
    if sc.metadata_cleanup {
        pyiceberg_ops(
            spec,
            T,
            "set-properties",
            &["write.metadata.delete-after-commit.enabled=true"],
        );
    }
    let before_replace = table_info(spec, T);
    let tdir = table_dir(before_replace["location"].as_str().unwrap());
    match sc.replace {
        Replace::Spark => {
            let m = tool(
                "spark_maintain.py",
                spec,
                T,
                &["--steps", "rewrite", "--min-input-files", "2"],
            );
            assert_eq!(m["after"]["data_files"], 1, "{m}");
        }
        Replace::PyIcebergDelete => {
            pyiceberg_ops(spec, T, "delete", &["--where", "value < 5.0"]);
        }
    }
    if sc.extra_append {
        pyiceberg_ops(
            spec,
            T,
            "append",
            &["--rows", "50", "--seed", "9", "--index", "7"],
        );
    }
    let info = table_info(spec, T);
    let old = live_data(&before_replace);
    let now = live_data(&info);
    let replaced: BTreeMap<&String, &u64> =
        old.iter().filter(|(p, _)| !now.contains_key(*p)).collect();
    assert!(!replaced.is_empty(), "the replace rewrote nothing: {info}");
    let replaced_bytes: u64 = replaced.values().copied().sum();
    let snapshots = info["snapshots"].as_array().unwrap().len();
    let current = info["current_snapshot_id"].as_i64().unwrap();
    // Every snapshot as PyIceberg reads it now (the current one is what readers must still see).
    let travel_before = time_travel(spec);
    let disk_before = files_under(&tdir);

    let config = write_config(dir, spec, &policies(dir), "");
    let (code, job, err) = icemaint_json(&[
        "expire",
        T,
        "--config",
        config.to_str().unwrap(),
        "--retain-last",
        &sc.retain_last.to_string(),
        "--older-than",
        "0s",
    ]);
    assert_eq!(code, 0, "{job}\n{err}");
    assert_eq!(job["status"], "succeeded", "{job}");
    let d = &job["detail"];
    let kept = sc.retain_last as usize;
    assert_eq!(d["snapshots_expired"], (snapshots - kept) as u64, "{job}");
    assert_eq!(d["snapshots_after"], kept as u64, "{job}");
    assert_eq!(
        d["deleted"]["data"]["files"],
        replaced.len() as u64,
        "{job}"
    );
    assert_eq!(d["deleted"]["data"]["bytes"], replaced_bytes, "{job}");
    assert!(
        d["deleted"]["manifest_list"]["files"].as_u64().unwrap() >= 1,
        "{job}"
    );
    assert_eq!(d["delete_failures"], 0, "{job}");

    // Storage: the data bytes dropped by exactly the replaced files; nothing live went.
    let disk_after = files_under(&tdir);
    assert_eq!(
        sum_where(&disk_before, is_data) - sum_where(&disk_after, is_data),
        replaced_bytes,
        "data bytes on disk"
    );
    let total_drop = sum_where(&disk_before, |_| true) - sum_where(&disk_after, |_| true);
    assert!(
        total_drop > replaced_bytes,
        "{total_drop} <= {replaced_bytes}"
    );
    for p in replaced.keys() {
        assert!(!disk_after.contains_key(&table_dir(p)), "{p} still on disk");
    }
    for p in now.keys() {
        assert!(disk_after.contains_key(&table_dir(p)), "live {p} deleted");
    }
    if sc.metadata_cleanup {
        assert!(
            d["deleted"]["metadata"]["files"].as_u64().unwrap() >= 1,
            "{job}"
        );
        // The current file and at most `previous-versions-max` older ones remain.
        let metadata_json = disk_after
            .keys()
            .filter(|p| p.to_string_lossy().ends_with(".metadata.json"))
            .count();
        assert!(
            (1..=3).contains(&metadata_json),
            "{metadata_json} metadata files left"
        );
    }

    // Readers: PyIceberg and DuckDB agree on the rows they read before; every retained snapshot
    // reads as it did before the expiry.
    let read = verify(spec, T, true, false);
    assert!(read.agree, "{}", read.raw);
    let (rows, checksum) = &travel_before[&current];
    assert_eq!((read.rows, &read.checksum), (*rows, checksum));
    assert_eq!(read.snapshots, kept as u64);
    let travel_after = time_travel(spec);
    assert_eq!(travel_after.len(), kept);
    for (id, got) in &travel_after {
        assert_eq!(Some(got), travel_before.get(id), "snapshot {id}");
    }
}

#[test]
fn expire_after_spark_rewrite_sql_catalog_local() {
    let dir = TestDir::new("expire-sql");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    let sc = Scenario {
        replace: Replace::Spark,
        extra_append: false,
        retain_last: 1,
        metadata_cleanup: false,
    };
    expire_after_replace(&spec, &dir, sc, local);
}

#[test]
fn expire_after_copy_on_write_delete_rest_catalog_keeps_two() {
    let dir = TestDir::new("expire-rest");
    let rest = RestCatalogServer::start(&dir.join("warehouse"));
    let spec = CatalogSpec::rest(rest.uri());
    // PyIceberg's rewrite, not Spark's: one Spark run per test suite is enough for the time budget.
    let sc = Scenario {
        replace: Replace::PyIcebergDelete,
        extra_append: true,
        retain_last: 2,
        metadata_cleanup: false,
    };
    expire_after_replace(&spec, &dir, sc, local);
}

#[test]
fn expire_after_copy_on_write_delete_sql_catalog_s3s() {
    let dir = TestDir::new("expire-s3s");
    let s3 = S3Server::start_s3s(&dir.join("s3"));
    let data = s3.data_dir().unwrap().to_path_buf();
    let spec = CatalogSpec::sql(dir.join("catalog.db"), "s3://lake/wh").with_s3(s3.access());
    let sc = Scenario {
        replace: Replace::PyIcebergDelete,
        extra_append: true,
        retain_last: 1,
        metadata_cleanup: true,
    };
    expire_after_replace(&spec, &dir, sc, |uri| {
        data.join(uri.strip_prefix("s3://").unwrap())
    });
}

/// Sets the modification time of `p` to `age` ago.
fn backdate(p: &Path, age: Duration) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn plant(p: &Path, age: Option<Duration>) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b"junk, not referenced by any snapshot\n").unwrap();
    if let Some(age) = age {
        backdate(p, age);
    }
}

#[test]
fn orphans_on_local_files_respect_age_hidden_files_and_siblings() {
    let dir = TestDir::new("orphans-local");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    make_table(&spec, T, &["--appends", "3", "--rows", "50"]);
    let info = table_info(&spec, T);
    let tdir = local(info["location"].as_str().unwrap());
    let want = verify(&spec, T, false, false);
    // Every file the table has is referenced; make them all old, so only the references protect
    // them.
    let referenced = files_under(&tdir);
    for p in referenced.keys() {
        backdate(p, 10 * DAY);
    }
    let old = [
        tdir.join("data/junk-old.parquet"),
        tdir.join("metadata/junk-old.avro"),
        tdir.join("data/org_id=9/junk-nested.parquet"),
    ];
    for p in &old {
        plant(p, Some(10 * DAY));
    }
    let young = tdir.join("data/junk-young.parquet");
    plant(&young, None);
    let hidden = tdir.join("data/.junk-old.parquet.crc");
    plant(&hidden, Some(10 * DAY));
    // Hadoop-style readers find the current metadata through it: never an orphan.
    let hint = tdir.join("metadata/version-hint.text");
    plant(&hint, Some(10 * DAY));
    // A sibling whose name extends the table directory's: never listed.
    let sibling = PathBuf::from(format!("{}_sibling/data/x.parquet", tdir.display()));
    plant(&sibling, Some(10 * DAY));

    let config = write_config(&dir, &spec, &policies(&dir), "");
    let cfg = config.to_str().unwrap();

    // Under a day without --force: refused, one line.
    let (code, _, err) = icemaint(&["remove-orphans", T, "--config", cfg, "--older-than", "1h"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("under 1d") && err.contains("force"), "{err}");

    // Dry run: lists the old junk, deletes nothing.
    let (code, job, err) = icemaint_json(&["remove-orphans", T, "--config", cfg, "--dry-run"]);
    assert_eq!(code, 0, "{job}\n{err}");
    let d = &job["detail"];
    assert_eq!(d["dry_run"], true);
    assert_eq!(d["orphan_files_found"], 3, "{job}");
    assert_eq!(d["too_new"], 1, "{job}");
    assert_eq!(d["hidden_skipped"], 1, "{job}");
    let listed: BTreeSet<PathBuf> = d["orphan_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| local(p.as_str().unwrap()))
        .collect();
    assert_eq!(listed, old.iter().cloned().collect());
    assert!(old.iter().all(|p| p.exists()));

    // For real, with the default window (3 days).
    let (code, job, err) = icemaint_json(&["remove-orphans", T, "--config", cfg]);
    assert_eq!(code, 0, "{job}\n{err}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["detail"]["files_deleted"], 3, "{job}");
    assert!(old.iter().all(|p| !p.exists()));
    assert!(young.exists(), "a fresh file (a commit in flight) survives");
    assert!(hidden.exists() && sibling.exists() && hint.exists());
    let after = files_under(&tdir);
    for (p, size) in &referenced {
        assert_eq!(
            after.get(p),
            Some(size),
            "referenced {} touched",
            p.display()
        );
    }
    let read = verify(&spec, T, true, false);
    assert!(read.agree, "{}", read.raw);
    assert_eq!((read.rows, &read.checksum), (want.rows, &want.checksum));

    // Nothing left: skipped.
    let (code, job, _) = icemaint_json(&["remove-orphans", T, "--config", cfg]);
    assert_eq!(code, 0);
    assert_eq!(job["status"], "skipped", "{job}");
}

#[test]
fn orphans_on_s3s_age_window() {
    let dir = TestDir::new("orphans-s3s");
    let s3 = S3Server::start_s3s(&dir.join("s3"));
    let spec = CatalogSpec::sql(dir.join("catalog.db"), "s3://lake/wh").with_s3(s3.access());
    make_table(&spec, T, &["--appends", "3", "--rows", "50"]);
    let info = table_info(&spec, T);
    let loc = info["location"].as_str().unwrap();
    let tdir = s3
        .data_dir()
        .unwrap()
        .join(loc.strip_prefix("s3://").unwrap());
    let referenced = files_under(&tdir);
    let config = write_config(&dir, &spec, &policies(&dir), "");
    let cfg = config.to_str().unwrap();
    // s3s-fs serves its directory: files written there are objects, aged by their mtime. Plant
    // one, let it age past the window, plant a second one right before the run.
    let old = tdir.join("data/junk-old.parquet");
    plant(&old, None);
    std::thread::sleep(Duration::from_secs(8));
    let young = tdir.join("data/junk-young.parquet");
    plant(&young, None);
    let (code, job, err) = icemaint_json(&[
        "remove-orphans",
        T,
        "--config",
        cfg,
        "--older-than",
        "4s",
        "--force",
    ]);
    assert_eq!(code, 0, "{job}\n{err}");
    let d = &job["detail"];
    assert_eq!(d["orphan_files_found"], 1, "{job}");
    assert_eq!(d["files_deleted"], 1, "{job}");
    assert_eq!(d["too_new"], 1, "{job}");
    assert!(!old.exists() && young.exists());
    let after = files_under(&tdir);
    for (p, size) in &referenced {
        assert_eq!(
            after.get(p),
            Some(size),
            "referenced {} touched",
            p.display()
        );
    }
    let read = verify(&spec, T, true, false);
    assert!(read.agree, "{}", read.raw);
    assert_eq!(read.rows, 150);
}

#[tokio::test]
async fn http_endpoints_and_cli_errors() {
    let dir = TestDir::new("pruning-http");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    make_table(
        &spec,
        T,
        &[
            "--appends",
            "3",
            "--rows",
            "50",
            "--partition",
            "none",
            "--property",
            "write.delete.mode=copy-on-write",
        ],
    );
    pyiceberg_ops(&spec, T, "delete", &["--where", "value < 5.0"]);
    make_table(
        &spec,
        "db.no_gc",
        &[
            "--appends",
            "2",
            "--rows",
            "10",
            "--property",
            "gc.enabled=false",
        ],
    );
    make_table(&spec, "other.t", &["--appends", "3", "--rows", "10"]);
    let snapshots = table_info(&spec, T)["snapshots"].as_array().unwrap().len();
    let config = write_config(&dir, &spec, &policies(&dir), "");
    let cfg = config.to_str().unwrap();

    // CLI: one-line errors.
    for (args, needle) in [
        (
            vec!["expire", "db.nope", "--config", cfg],
            "db.nope not found",
        ),
        (
            vec!["expire", "zzz.t", "--config", cfg],
            "not watched by any policy",
        ),
        (
            vec!["expire", T, "--config", cfg, "--older-than", "5x"],
            "--older-than",
        ),
        (
            vec!["expire", T, "--config", cfg, "--retain-last", "many"],
            "--retain-last",
        ),
        (vec!["expire", "nodot", "--config", cfg], "nodot"),
    ] {
        let (code, out, err) = icemaint(&args);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    // A job that ran and failed: its log line, then the error as the last line.
    let (code, _, err) = icemaint(&["expire", "db.no_gc", "--config", cfg]);
    assert_eq!(code, 1);
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.starts_with("error: table db.no_gc has gc.enabled=false"),
        "{err}"
    );
    // A table whose policy has no [expire] section: asked for by hand, it runs with Spark's
    // defaults (the table's history.expire.*: 5 days, so nothing yet; keep 1 snapshot).
    let (code, job, _) = icemaint_json(&["expire", "other.t", "--config", cfg]);
    assert_eq!(code, 0, "{job}");
    assert_eq!(job["status"], "skipped", "{job}");
    assert_eq!(job["detail"]["snapshots_expired"], 0, "{job}");
    let (code, job, _) =
        icemaint_json(&["expire", "other.t", "--config", cfg, "--older-than", "0s"]);
    assert_eq!(code, 0, "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["detail"]["snapshots_expired"], 2, "{job}");
    assert_eq!(
        table_info(&spec, "other.t")["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let d = Daemon::start(&config, &[]);
    d.wait_for("/readyz", "readiness", |s, _| s == 200).await;
    // The daemon's start-up reconciliation holds the table's lock for a moment: post again on
    // 409 (`post_when_free`).
    // Dry run through the API: planned, nothing committed.
    let (s, v) = d
        .post_when_free(
            &format!("/api/v1/tables/{T}/expire"),
            Some(serde_json::json!({"older-than": "0s", "retain-last": 1, "dry-run": true})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let job = d.wait_job(v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["detail"]["dry_run"], true);
    assert_eq!(job["detail"]["snapshots_expired"], (snapshots - 1) as u64);
    assert!(job["detail"]["planned"]["data"]["files"].as_u64().unwrap() >= 1);
    assert_eq!(job["detail"]["files_deleted"], 0);
    assert_eq!(
        table_info(&spec, T)["snapshots"].as_array().unwrap().len(),
        snapshots
    );

    // For real.
    let (s, v) = d
        .post_when_free(
            &format!("/api/v1/tables/{T}/expire"),
            Some(serde_json::json!({"older-than": "0s", "retain-last": 1})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let job = d.wait_job(v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let detail = &job["detail"];
    assert!(
        detail["deleted"]["data"]["files"].as_u64().unwrap() >= 1,
        "{job}"
    );
    assert!(detail["files_deleted"].as_u64().unwrap() >= 3, "{job}");
    assert_eq!(
        table_info(&spec, T)["snapshots"].as_array().unwrap().len(),
        1
    );
    let metrics = d.get("/metrics").await.1;
    let text = metrics.as_str().unwrap();
    for needle in [
        format!(
            "icemaint_snapshots_expired_total{{table=\"{T}\"}} {}",
            snapshots - 1
        ),
        "icemaint_files_deleted_total{file_kind=\"data\"}".to_string(),
        "icemaint_deleted_bytes_total{file_kind=\"manifest_list\"}".to_string(),
        "icemaint_jobs_total{kind=\"expire\",outcome=\"succeeded\"} 2".to_string(),
    ] {
        assert!(text.contains(&needle), "missing {needle} in\n{text}");
    }
    // Orphans dry run (body overrides the policy's window: 1s needs force).
    let (s, v) = d
        .post_when_free(
            &format!("/api/v1/tables/{T}/remove-orphans"),
            Some(serde_json::json!({"dry-run": true, "older-than": "1s"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("force"), "{v}");
    let (s, v) = d
        .post_when_free(
            &format!("/api/v1/tables/{T}/remove-orphans"),
            Some(serde_json::json!({"dry-run": true})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let job = d.wait_job(v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "skipped", "{job}");
    assert_eq!(job["kind"], "remove-orphans");
    assert_eq!(job["detail"]["orphan_files_found"], 0);

    // Errors: bad bodies 400, unknown tables 404, a held lock 409.
    for (path, body, status) in [
        (
            format!("/api/v1/tables/{T}/expire"),
            Some(serde_json::json!({"bogus": 1})),
            400,
        ),
        (
            format!("/api/v1/tables/{T}/expire"),
            Some(serde_json::json!({"older-than": "soon"})),
            400,
        ),
        (
            format!("/api/v1/tables/{T}/remove-orphans"),
            Some(serde_json::json!({"retain-last": 1})),
            400,
        ),
        ("/api/v1/tables/db.nope/expire".to_string(), None, 404),
        ("/api/v1/tables/zzz.t/remove-orphans".to_string(), None, 404),
    ] {
        let (s, v) = d.post_when_free(&path, body).await;
        assert_eq!(s, status, "{path}: {v}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    let store =
        icemaint::store::Store::connect(&format!("sqlite://{}", dir.join("state.db").display()))
            .await
            .unwrap();
    let epoch = store
        .try_lock(T, "another-process", "their-job", 60_000)
        .await
        .unwrap()
        .unwrap();
    let (s, v) = d
        .post(&format!("/api/v1/tables/{T}/expire"), None, None)
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["job_id"], "their-job");
    // The CLI waits for nobody either: the same lock refuses it.
    let (code, _, err) = icemaint(&["expire", T, "--config", cfg]);
    assert_ne!(code, 0);
    assert!(err.contains("busy with job their-job"), "{err}");
    store.unlock(T, "their-job", epoch).await.unwrap();
    assert_eq!(d.stop(), 0);
}

/// A real catalog with one behaviour changed.
#[derive(Debug)]
enum Twist {
    /// Commits fail as if the server answered 503 after applying them (or not): the outcome is
    /// unknown.
    UnknownCommitOutcome,
    /// After a commit, loading the table returns it as it was before: as if writers had committed
    /// snapshots reaching everything the expiry just removed.
    StaleAfterCommit(std::sync::Mutex<Option<Box<iceberg::table::Table>>>),
}

#[derive(Debug)]
struct Twisted(Arc<dyn iceberg::Catalog>, Twist);

#[async_trait::async_trait]
impl iceberg::Catalog for Twisted {
    async fn list_namespaces(
        &self,
        p: Option<&iceberg::NamespaceIdent>,
    ) -> iceberg::Result<Vec<iceberg::NamespaceIdent>> {
        self.0.list_namespaces(p).await
    }
    async fn create_namespace(
        &self,
        n: &iceberg::NamespaceIdent,
        p: HashMap<String, String>,
    ) -> iceberg::Result<iceberg::Namespace> {
        self.0.create_namespace(n, p).await
    }
    async fn get_namespace(
        &self,
        n: &iceberg::NamespaceIdent,
    ) -> iceberg::Result<iceberg::Namespace> {
        self.0.get_namespace(n).await
    }
    async fn namespace_exists(&self, n: &iceberg::NamespaceIdent) -> iceberg::Result<bool> {
        self.0.namespace_exists(n).await
    }
    async fn update_namespace(
        &self,
        n: &iceberg::NamespaceIdent,
        p: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.0.update_namespace(n, p).await
    }
    async fn drop_namespace(&self, n: &iceberg::NamespaceIdent) -> iceberg::Result<()> {
        self.0.drop_namespace(n).await
    }
    async fn list_tables(
        &self,
        n: &iceberg::NamespaceIdent,
    ) -> iceberg::Result<Vec<iceberg::TableIdent>> {
        self.0.list_tables(n).await
    }
    async fn create_table(
        &self,
        n: &iceberg::NamespaceIdent,
        c: iceberg::TableCreation,
    ) -> iceberg::Result<iceberg::table::Table> {
        self.0.create_table(n, c).await
    }
    async fn load_table(&self, t: &iceberg::TableIdent) -> iceberg::Result<iceberg::table::Table> {
        let table = self.0.load_table(t).await?;
        if let Twist::StaleAfterCommit(first) = &self.1 {
            return Ok((**first.lock().unwrap().get_or_insert(Box::new(table))).clone());
        }
        Ok(table)
    }
    async fn drop_table(&self, t: &iceberg::TableIdent) -> iceberg::Result<()> {
        self.0.drop_table(t).await
    }
    async fn purge_table(&self, t: &iceberg::TableIdent) -> iceberg::Result<()> {
        self.0.purge_table(t).await
    }
    async fn table_exists(&self, t: &iceberg::TableIdent) -> iceberg::Result<bool> {
        self.0.table_exists(t).await
    }
    async fn rename_table(
        &self,
        a: &iceberg::TableIdent,
        b: &iceberg::TableIdent,
    ) -> iceberg::Result<()> {
        self.0.rename_table(a, b).await
    }
    async fn register_table(
        &self,
        t: &iceberg::TableIdent,
        l: String,
    ) -> iceberg::Result<iceberg::table::Table> {
        self.0.register_table(t, l).await
    }
    async fn update_table(
        &self,
        c: iceberg::TableCommit,
    ) -> iceberg::Result<iceberg::table::Table> {
        match &self.1 {
            Twist::UnknownCommitOutcome => Err(iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                "503 service unavailable",
            )),
            Twist::StaleAfterCommit(_) => self.0.update_table(c).await,
        }
    }
}

#[tokio::test]
async fn unknown_commit_outcome_deletes_nothing() {
    let dir = TestDir::new("expire-unknown");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    // The writer trims the metadata log to 2 entries but leaves the files (delete-after-commit
    // is only turned on at the end).
    make_table(
        &spec,
        T,
        &[
            "--appends",
            "4",
            "--rows",
            "20",
            "--partition",
            "none",
            "--property",
            "write.metadata.previous-versions-max=2",
        ],
    );
    pyiceberg_ops(
        &spec,
        T,
        "set-properties",
        &["write.metadata.delete-after-commit.enabled=true"],
    );
    let info = table_info(&spec, T);
    let tdir = local(info["location"].as_str().unwrap());
    let disk = files_under(&tdir);
    let metadata_json = |files: &BTreeMap<PathBuf, u64>| {
        files
            .keys()
            .filter(|p| p.to_string_lossy().ends_with(".metadata.json"))
            .count()
    };
    assert!(
        metadata_json(&disk) > 4,
        "the writer left old metadata files"
    );

    #[derive(serde::Deserialize)]
    struct Root {
        catalog: icemaint::config::CatalogConfig,
    }
    let cfg = toml::from_str::<Root>(&spec.config_toml()).unwrap().catalog;
    let real = icemaint::catalog::CatalogHandle::connect(&cfg)
        .await
        .unwrap();
    let failing = real.with_catalog(Arc::new(Twisted(
        real.catalog.clone(),
        Twist::UnknownCommitOutcome,
    )));
    let opts = icemaint::maintenance::expire::ExpireOptions {
        older_than: Some(Duration::ZERO),
        retain_last: Some(1),
        max_concurrent_deletes: 4,
        dry_run: false,
    };
    let metrics = icemaint::telemetry::Metrics::new();
    let err =
        icemaint::maintenance::expire::expire_table(&failing, T, &opts, &metrics, &Fence::none())
            .await
            .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("commit state unknown") && msg.contains("nothing was deleted"),
        "{msg}"
    );
    assert!(!err.is_retryable());
    assert_eq!(
        files_under(&tdir),
        disk,
        "no file may go when the commit is in doubt"
    );
    assert_eq!(
        table_info(&spec, T)["snapshots"].as_array().unwrap().len(),
        4
    );

    // Someone already deleted the oldest snapshot's manifest list: that does not block expiry.
    let first = info["snapshots"][0]["snapshot_id"].as_i64().unwrap();
    let list = disk
        .keys()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("snap-{first}-"))
        })
        .unwrap()
        .clone();
    std::fs::remove_file(&list).unwrap();

    // The same table through the real catalog: expired, the other appends' manifest lists go, no
    // data file (all still live) is touched, and the old metadata files go too.
    use icemaint::maintenance::files::FileKind;
    let report =
        icemaint::maintenance::expire::expire_table(&real, T, &opts, &metrics, &Fence::none())
            .await
            .unwrap();
    assert_eq!(report.snapshots_expired, 3);
    assert_eq!(report.missing_files, 1, "{report:?}");
    assert!(!report.deleted.contains_key(&FileKind::Data), "{report:?}");
    assert_eq!(
        report.deleted[&FileKind::ManifestList].files,
        2,
        "{report:?}"
    );
    assert!(report.deleted[&FileKind::Metadata].files >= 3, "{report:?}");
    let after = files_under(&tdir);
    for (p, size) in disk.iter().filter(|(p, _)| is_data(p)) {
        assert_eq!(after.get(p), Some(size));
    }
    assert_eq!(metadata_json(&after), 3, "current + previous-versions-max");
    // Idempotent: nothing more to do.
    let again =
        icemaint::maintenance::expire::expire_table(&real, T, &opts, &metrics, &Fence::none())
            .await
            .unwrap();
    assert_eq!(
        (again.snapshots_expired, again.files_deleted),
        (0, 0),
        "{again:?}"
    );
    let read = verify(&spec, T, true, false);
    assert!(read.agree && read.rows == 80, "{}", read.raw);
}

#[tokio::test]
async fn snapshots_seen_after_the_commit_keep_what_they_reach() {
    let dir = TestDir::new("expire-protect");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    make_table(
        &spec,
        T,
        &[
            "--appends",
            "3",
            "--rows",
            "20",
            "--partition",
            "none",
            "--delete-where",
            "value < 5.0",
            "--delete-mode",
            "copy-on-write",
        ],
    );
    let info = table_info(&spec, T);
    let tdir = local(info["location"].as_str().unwrap());
    let disk = files_under(&tdir);

    #[derive(serde::Deserialize)]
    struct Root {
        catalog: icemaint::config::CatalogConfig,
    }
    let cfg = toml::from_str::<Root>(&spec.config_toml()).unwrap().catalog;
    let real = icemaint::catalog::CatalogHandle::connect(&cfg)
        .await
        .unwrap();
    let twisted = real.with_catalog(Arc::new(Twisted(
        real.catalog.clone(),
        Twist::StaleAfterCommit(Default::default()),
    )));
    let opts = icemaint::maintenance::expire::ExpireOptions {
        older_than: Some(Duration::ZERO),
        retain_last: Some(1),
        max_concurrent_deletes: 4,
        dry_run: false,
    };
    let metrics = icemaint::telemetry::Metrics::new();
    let report =
        icemaint::maintenance::expire::expire_table(&twisted, T, &opts, &metrics, &Fence::none())
            .await
            .unwrap();
    // The commit landed and the plan found replaced data files, but the re-read before deleting
    // showed snapshots reaching them: nothing is deleted.
    assert_eq!(report.snapshots_expired, 3, "{report:?}");
    use icemaint::maintenance::files::FileKind;
    assert!(report.planned[&FileKind::Data].files >= 1, "{report:?}");
    assert_eq!(report.files_deleted, 0, "{report:?}");
    assert_eq!(
        files_under(&tdir).len(),
        disk.len() + 1,
        "only the new metadata file"
    );
}
