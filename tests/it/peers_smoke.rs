//! Smoke tests of the test infrastructure itself: the peers create and read real Iceberg tables on
//! a REST catalog, on a SQLite catalog with S3 storage (s3s-fs, moto), and the servers go away.

use std::collections::BTreeSet;

use crate::harness::*;

/// Checksum of make_table.py's rows for `--appends 20 --rows 500` (seed 42, 5 orgs, 4 days): the
/// same on every catalog and storage.
const CHECKSUM_20X500: &str = "7324faee19022a59";
const TABLE: &str = "db.metrics";

/// Asserts what make_table.py reported for 20 appends x 500 rows.
fn assert_made_20x500(made: &serde_json::Value) {
    assert_eq!(made["rows"], 10_000, "{made}");
    assert_eq!(made["data_files"], 20, "{made}");
    assert_eq!(made["snapshots"], 20, "{made}");
    assert_eq!(made["delete_files"], 0, "{made}");
}

#[test]
fn rest_catalog_pyiceberg_and_duckdb_agree() {
    let dir = TestDir::new("rest-smoke");
    let rest = RestCatalogServer::start(&dir.join("warehouse"));
    assert!(rest.uri().starts_with("http://127.0.0.1:"));
    let spec = CatalogSpec::rest(rest.uri());

    let made = make_table(&spec, TABLE, &["--appends", "20", "--rows", "500"]);
    assert_made_20x500(&made);

    let v = verify(&spec, TABLE, true, false);
    assert!(v.agree, "readers disagree: {}", v.raw);
    assert_eq!(v.exit_code, 0);
    assert_eq!(v.rows, 10_000);
    assert_eq!(v.checksum, CHECKSUM_20X500);
    assert_eq!(v.data_files, 20);
    assert_eq!(v.delete_files, 0);
    assert_eq!(v.snapshots, 20);
    let expected = Some((10_000, CHECKSUM_20X500.to_string()));
    assert_eq!(v.reader("duckdb"), expected, "{}", v.raw);
    assert_eq!(v.reader("duckdb_rest_attach"), expected, "{}", v.raw);
    // Metadata written by the Java server lives in our warehouse (Java writes file:/ URIs).
    let wh = path_str(rest.warehouse());
    assert!(
        v.metadata_location
            .contains(&format!("{wh}/db/metrics/metadata/")),
        "{}",
        v.metadata_location
    );

    let info = table_info(&spec, TABLE);
    assert_eq!(info["format_version"], 2);
    let files = info["data_files"].as_array().expect("data_files");
    assert_eq!(files.len(), 20);
    let records: u64 = files.iter().map(|f| f["records"].as_u64().unwrap()).sum();
    assert_eq!(records, 10_000);
    // One file per (org, day): 5 orgs x 4 days = 20 distinct partitions.
    let parts: BTreeSet<String> = files.iter().map(|f| f["partition"].to_string()).collect();
    assert_eq!(parts.len(), 20, "{parts:?}");
    assert!(
        parts.contains(r#"{"org_id":"0","ts_day":"2025-01-01"}"#),
        "{parts:?}"
    );
    let snaps = info["snapshots"].as_array().expect("snapshots");
    assert_eq!(snaps.len(), 20);
    assert_eq!(info["current_snapshot_id"], snaps[19]["snapshot_id"]);
    assert_eq!(snaps[19]["parent_id"], snaps[18]["snapshot_id"]);
    assert_eq!(snaps[0]["parent_id"], serde_json::Value::Null);
    assert_eq!(
        info["metadata_location"].as_str(),
        Some(v.metadata_location.as_str())
    );
}

#[test]
fn sql_catalog_on_s3s_pyiceberg_and_duckdb_agree() {
    let dir = TestDir::new("s3s-smoke");
    let s3 = S3Server::start_s3s(&dir.join("s3"));
    assert_eq!(
        (s3.access_key(), s3.secret_key()),
        (S3_ACCESS_KEY, S3_SECRET_KEY)
    );
    let spec = CatalogSpec::sql(dir.join("catalog.db"), "s3://lake/wh").with_s3(s3.access());

    let made = make_table(&spec, TABLE, &["--appends", "20", "--rows", "500"]);
    assert_made_20x500(&made);

    let v = verify(&spec, TABLE, true, false);
    assert!(v.agree, "readers disagree: {}", v.raw);
    assert_eq!(v.rows, 10_000);
    assert_eq!(
        v.checksum, CHECKSUM_20X500,
        "same rows as on the REST catalog"
    );
    assert_eq!(v.data_files, 20);
    assert_eq!(
        v.reader("duckdb"),
        Some((10_000, CHECKSUM_20X500.to_string())),
        "{}",
        v.raw
    );
    assert!(
        v.metadata_location
            .starts_with("s3://lake/wh/db/metrics/metadata/"),
        "{}",
        v.metadata_location
    );

    // The objects really are in s3s-fs's directory: bucket "lake", key prefix "wh/db/metrics".
    let table_dir = s3
        .data_dir()
        .expect("s3s data dir")
        .join("lake/wh/db/metrics");
    let parquet = walk(&table_dir)
        .into_iter()
        .filter(|p| p.ends_with(".parquet"))
        .count();
    assert_eq!(parquet, 20, "parquet files under {}", table_dir.display());
    let info = table_info(&spec, TABLE);
    let paths: Vec<&str> = info["data_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("s3://lake/wh/db/metrics/data/")),
        "{paths:?}"
    );
}

#[test]
fn sql_catalog_on_moto_roundtrip() {
    let dir = TestDir::new("moto-smoke");
    let s3 = S3Server::start_moto();
    let spec = CatalogSpec::sql(dir.join("catalog.db"), "s3://moto-lake/wh").with_s3(s3.access());
    let made = make_table(
        &spec,
        TABLE,
        &["--appends", "3", "--rows", "100", "--partition", "none"],
    );
    assert_eq!(made["rows"], 300, "{made}");
    let v = verify(&spec, TABLE, true, false);
    assert!(v.agree, "{}", v.raw);
    assert_eq!((v.rows, v.data_files), (300, 3));
    assert_eq!(v.reader("duckdb").map(|r| r.0), Some(300));
}

#[test]
fn pyiceberg_ops_commit_as_a_concurrent_writer() {
    let dir = TestDir::new("ops-smoke");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), path_str(&dir.join("wh")));
    make_table(&spec, TABLE, &["--appends", "4", "--rows", "100"]);
    let before = table_info(&spec, TABLE);

    let out = pyiceberg_ops(
        &spec,
        TABLE,
        "append",
        &["--rows", "50", "--appends", "2", "--seed", "9"],
    );
    assert_eq!(out["rows_appended"], 100, "{out}");
    let ids = out["snapshot_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    let info = table_info(&spec, TABLE);
    assert_eq!(info["snapshots"].as_array().unwrap().len(), 6);
    assert_eq!(info["current_snapshot_id"], ids[1]);
    assert_eq!(
        info["snapshots"][4]["parent_id"],
        before["current_snapshot_id"]
    );
    assert_eq!(info["data_files"].as_array().unwrap().len(), 6);

    let out = pyiceberg_ops(
        &spec,
        TABLE,
        "set-properties",
        &["icemaint.test=yes", "commit.retry.num-retries=7"],
    );
    assert_eq!(out["properties"]["icemaint.test"], "yes", "{out}");
    let out = pyiceberg_ops(&spec, TABLE, "remove-properties", &["icemaint.test"]);
    assert!(out["properties"].get("icemaint.test").is_none(), "{out}");
    assert_eq!(out["properties"]["commit.retry.num-retries"], "7");

    let v0 = verify(&spec, TABLE, false, false);
    assert_eq!(v0.rows, 500);
    let out = pyiceberg_ops(&spec, TABLE, "delete", &["--where", "org_id == 0"]);
    assert_eq!(out["summary"]["operation"], "delete", "{out}");
    let v = verify(&spec, TABLE, true, false);
    assert!(v.agree, "{}", v.raw);
    // Append 0 of make_table (100 rows) and append 0 of pyiceberg_ops (50 rows) are org 0.
    assert_eq!(v.rows, 500 - 150);
    let info = table_info(&spec, TABLE);
    let orgs: BTreeSet<&str> = info["data_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["partition"]["org_id"].as_str().unwrap())
        .collect();
    assert!(!orgs.contains("0"), "{orgs:?}");
}

#[test]
fn spark_writes_deletes_and_compacts_via_rest() {
    let dir = TestDir::new("spark-smoke");
    let rest = RestCatalogServer::start(&dir.join("warehouse"));
    let spec = CatalogSpec::rest(rest.uri());
    let t = "db.spark_metrics";

    // 2 commits x 4 files x 100 rows, unpartitioned; then a merge-on-read DELETE of part of the
    // rows of every file (value is in [0, 100)), written as position delete files.
    let made = tool(
        "spark_make_table.py",
        &spec,
        t,
        &[
            "--partition",
            "none",
            "--appends",
            "2",
            "--files-per-append",
            "4",
            "--rows",
            "100",
            "--delete-where",
            "value < 10",
        ],
    );
    assert_eq!(made["data_files"], 8, "{made}");
    assert!(made["delete_files"].as_u64().unwrap() >= 1, "{made}");
    // Spark's own count after the delete: about 10 % of the 800 rows are gone.
    let remaining = made["rows"].as_u64().unwrap();
    assert!((640..800).contains(&remaining), "{made}");

    let info = table_info(&spec, t);
    assert_eq!(info["delete_files"], made["delete_files"], "{info}");
    let before = verify(&spec, t, true, false);
    assert!(before.agree, "{}", before.raw);
    assert_eq!(before.rows, remaining);
    assert_eq!(
        before.reader("duckdb").map(|r| r.0),
        Some(remaining),
        "{}",
        before.raw
    );

    let maint = tool(
        "spark_maintain.py",
        &spec,
        t,
        &["--steps", "rewrite", "--min-input-files", "2"],
    );
    assert_eq!(maint["before"]["data_files"], 8, "{maint}");
    assert_eq!(maint["after"]["data_files"], 1, "{maint}");

    let after = verify(&spec, t, true, true);
    assert!(after.agree, "{}", after.raw);
    assert_eq!((after.rows, after.data_files), (remaining, 1));
    assert_eq!(after.checksum, before.checksum);
    assert_eq!(
        after.reader("spark"),
        Some((remaining, before.checksum.clone())),
        "{}",
        after.raw
    );
}

#[test]
fn servers_stop_on_drop_and_on_panic() {
    let dir = TestDir::new("lifetime");
    let rest = RestCatalogServer::start(&dir.join("wh"));
    let s3s = S3Server::start_s3s(&dir.join("s3"));
    let moto = S3Server::start_moto();
    let pids = [rest.pid(), s3s.pid(), moto.pid()];
    let ports: BTreeSet<u16> = [rest.port(), s3s.port(), moto.port()].into();
    assert_eq!(ports.len(), 3);
    assert!(pids.iter().all(|&p| pid_alive(p)));
    drop((rest, s3s, moto));
    for p in pids {
        assert!(!pid_alive(p), "server pid {p} still running after drop");
    }

    // A panicking test thread still stops its server (unwinding drops it).
    let wh = dir.join("wh2");
    let payload = std::thread::spawn(move || {
        let rest = RestCatalogServer::start(&wh);
        std::panic::panic_any((rest.pid(), rest.log_path().to_path_buf()));
    })
    .join()
    .expect_err("thread panics")
    .downcast::<(u32, std::path::PathBuf)>()
    .expect("payload");
    let (pid, log) = *payload;
    assert!(!pid_alive(pid), "server pid {pid} survived a panic");
    // The log of a server dropped during a panic is kept for debugging; this panic was on purpose.
    let log_dir = log.parent().unwrap();
    assert!(log.is_file(), "{}", log.display());
    std::fs::remove_dir_all(log_dir).unwrap();
}

/// All files below `dir` (as strings).
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(path_str(&p).to_string());
            }
        }
    }
    out
}
