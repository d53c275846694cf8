//! Spark as the compaction engine, against a real Spark standalone cluster on 127.0.0.1
//! ([`SparkCluster`], shared): `engine = "spark"` through the daemon's HTTP API and through
//! `icemaint compact --engine spark`, `engine = "auto"` deciding by the plan's size, and the
//! failures (master unreachable, timeout, the daemon stopped mid-run). Tables are tiny and
//! on SQLite catalogs (Spark reaches them through Iceberg's JdbcCatalog).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::daemon::{Daemon, write_config};
use crate::harness::{
    CatalogSpec, RestCatalogServer, TestDir, Verify, make_table, path_str, verify,
};
use crate::spark_cluster::{SparkCluster, processes_with};

/// 2 orgs x 2 days = 4 partitions, 5 appends: 20 small files.
const SHAPE: &[&str] = &[
    "--appends",
    "5",
    "--rows",
    "200",
    "--orgs",
    "2",
    "--days",
    "2",
];

/// A policy selecting `spark.*` with `[compaction]` lines added; schedules that never fire
/// during a test.
fn write_policy(dir: &TestDir, compaction: &str) -> PathBuf {
    let p = dir.join("policies");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("spark.toml"),
        format!(
            "version = 1\nname = \"spark\"\ntables = [\"spark.*\"]\n\n[reconcile]\nschedule = \"0 0 1 1 *\"\n\n\
             [compaction]\nschedule = \"0 0 1 1 *\"\nmin-input-files = 2\n{compaction}\n"
        ),
    )
    .unwrap();
    p
}

/// A SQL catalog and an icemaint config using the shared cluster, with `timeout` and the
/// given master (the cluster's when `None`).
fn setup(
    name: &str,
    compaction: &str,
    timeout: &str,
    master: Option<&str>,
) -> (TestDir, CatalogSpec, PathBuf) {
    let cluster = SparkCluster::get();
    let dir = TestDir::new(name);
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    let policies = write_policy(&dir, compaction);
    let mut spark = cluster.config_toml(timeout);
    if let Some(m) = master {
        spark = spark.replace(&cluster.master_url, m);
    }
    let config = write_config(&dir, &spec, &policies, &spark);
    (dir, spec, config)
}

/// `icemaint compact` with the cluster's environment; (exit code, JSON, stderr).
fn compact(config: &Path, table: &str, extra: &[&str]) -> (i32, Value, String) {
    let env = SparkCluster::get().env();
    let mut args = vec!["compact", table, "--config", path_str(config), "--json"];
    args.extend(extra);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icemaint"))
        .args(&args)
        .envs(env)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::String(stdout.into_owned())),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn agreed(spec: &CatalogSpec, table: &str) -> Verify {
    let v = verify(spec, table, true, false);
    assert!(
        v.agree,
        "PyIceberg and DuckDB disagree on {table}: {}",
        v.raw
    );
    v
}

/// A finished Spark job's detail: Spark's counts, the plan it followed, the application the
/// master lists as finished, the snapshot read back from the table; rows unchanged and the
/// files reduced as the binpack plan says.
fn check_spark_run(spec: &CatalogSpec, table: &str, detail: &Value, before: &Verify) {
    assert_eq!(detail["engine"], "spark", "{detail}");
    let plan = &detail["plan"]["plan"];
    let u = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("not a count: {v} in {detail}"))
    };
    assert_eq!(
        u(&detail["files_read"]),
        u(&plan["rewrite_files"]),
        "{detail}"
    );
    assert_eq!(
        u(&detail["files_written"]),
        u(&plan["expected_output_files"]),
        "{detail}"
    );
    assert!(
        u(&detail["bytes_read"]) > 0 && u(&detail["bytes_written"]) > 0,
        "{detail}"
    );
    let after = agreed(spec, table);
    assert_eq!(
        (after.rows, &after.checksum),
        (before.rows, &before.checksum)
    );
    assert_eq!(
        after.data_files,
        before.data_files - u(&plan["rewrite_files"]) + u(&plan["expected_output_files"])
    );
    assert!(after.data_files < before.data_files);
    let snapshot = detail["snapshot_ids"].as_array().unwrap().last().cloned();
    let info = crate::harness::table_info(spec, table);
    assert_eq!(
        snapshot,
        Some(info["current_snapshot_id"].clone()),
        "{detail}"
    );
    let app = detail["spark"]["application_id"].as_str().unwrap();
    let listed = SparkCluster::get()
        .completed_app(app)
        .unwrap_or_else(|| panic!("master does not list {app} as completed"));
    assert_eq!(listed["state"], "FINISHED", "{listed}");
    eprintln!(
        "spark run of {table}: {} s, {} files in, {} out",
        detail["seconds"], detail["files_read"], detail["files_written"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_engine_compacts_through_the_api_and_the_cli() {
    let (_dir, spec, config) = setup("spark-api-cli", "", "10m", None);
    let (api_t, cli_t) = ("spark.by_api", "spark.by_cli");
    make_table(&spec, api_t, SHAPE);
    make_table(&spec, cli_t, SHAPE);
    let before_api = agreed(&spec, api_t);
    let before_cli = agreed(&spec, cli_t);

    let env = SparkCluster::get().env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = Daemon::start(&config, &env);
    let path = format!("/api/v1/tables/{api_t}/compact");
    // icemaint-only options are refused for Spark before any job exists.
    let (s, v) = d
        .post_when_free(
            &path,
            Some(json!({"engine": "spark", "rewrite-older-specs": true})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("rewrite-older-specs"),
        "{v}"
    );
    let (s, v) = d
        .post_when_free(&path, Some(json!({"engine": "spark"})))
        .await;
    assert_eq!(s, 202, "{v}");
    let job = d.wait_job(v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", d.log_text());
    check_spark_run(&spec, api_t, &job["detail"], &before_api);
    // The driver's log went into icemaint's, Spark's own lines included.
    let log = d.log_text();
    assert!(log.contains("spark application started"), "{log}");
    assert!(log.contains("Running Spark version"), "{log}");
    assert_eq!(d.stop(), 0);

    let (code, out, err) = compact(&config, cli_t, &["--engine", "spark"]);
    assert_eq!(code, 0, "{out}\n{err}");
    check_spark_run(&spec, cli_t, &out["result"], &before_cli);
    // Nothing left to do: no Spark job.
    let (code, out, err) = compact(&config, cli_t, &["--engine", "spark"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out["status"], "skipped", "{out}");
}

/// A catalog credential Spark is given (the REST fixture ignores it); it must appear in no
/// output.
const SECRET: &str = "tok-3b1f9c-never-printed";

/// On a REST catalog (Spark's `type=rest`, with a `token`), so both catalog kinds are covered.
#[tokio::test(flavor = "multi_thread")]
async fn spark_engine_auto_picks_spark_above_the_threshold_and_native_below() {
    let cluster = SparkCluster::get();
    let dir = TestDir::new("spark-auto");
    let rest = RestCatalogServer::start(&dir.join("warehouse"));
    let spec = CatalogSpec::rest(rest.uri());
    let policies = write_policy(&dir, "engine = \"auto\"");
    let extra = format!(
        "{}\n[catalog.properties]\ntoken = \"{SECRET}\"\n",
        cluster.config_toml("10m")
    );
    let config = write_config(&dir, &spec, &policies, &extra);
    // The threshold sits between the two tables' sizes: found from icemaint's own plans.
    let (small, big) = ("spark.small", "spark.big");
    make_table(
        &spec,
        small,
        &[
            "--appends",
            "3",
            "--rows",
            "50",
            "--orgs",
            "1",
            "--days",
            "1",
        ],
    );
    make_table(&spec, big, SHAPE);
    let plan_bytes = |t: &str| {
        let (code, out, err) = compact(&config, t, &["--dry-run"]);
        assert_eq!(code, 0, "{out}\n{err}");
        out["plan"]["rewrite_bytes"].as_u64().unwrap()
    };
    let (s, b) = (plan_bytes(small), plan_bytes(big));
    assert!(s < b, "{s} {b}");
    write_policy(
        &dir,
        &format!("engine = \"auto\"\nspark-min-input-bytes = {}", (s + b) / 2),
    );
    let before = agreed(&spec, big);
    let (code, out, err) = compact(&config, small, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out["result"]["engine"], "native", "{out}");
    let (code, out, err) = compact(&config, big, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    check_spark_run(&spec, big, &out["result"], &before);
    assert!(!format!("{out}{err}").contains(SECRET), "{out}\n{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_engine_failures_leave_the_table_and_no_process() {
    // Master unreachable: a port nothing listens on.
    let closed = format!("spark://127.0.0.1:{}", crate::ops_util::free_port());
    let (_d1, spec, config) = setup("spark-down", "engine = \"spark\"", "10m", Some(&closed));
    let t = "spark.down";
    make_table(&spec, t, SHAPE);
    let before = agreed(&spec, t);
    let (code, out, err) = compact(&config, t, &[]);
    assert_ne!(code, 0);
    assert_eq!(out["status"], "failed", "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains(&format!("spark master {closed} unreachable")),
        "{out}\n{err}"
    );
    let after = agreed(&spec, t);
    assert_eq!(
        (after.snapshots, after.data_files),
        (before.snapshots, before.data_files)
    );

    // Timeout: the driver is killed, the job fails, nothing of it stays.
    let (_d2, spec, config) = setup("spark-timeout", "engine = \"spark\"", "2s", None);
    let t = "spark.slow";
    make_table(&spec, t, SHAPE);
    let before = agreed(&spec, t);
    let (code, out, err) = compact(&config, t, &[]);
    assert_ne!(code, 0);
    assert_eq!(out["status"], "failed", "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 2s"),
        "{out}\n{err}"
    );
    let job = out["job_id"].as_str().unwrap();
    let run_dir = icemaint::spark::run_dir(job);
    assert!(processes_with(path_str(&run_dir)).is_empty());
    assert!(!run_dir.exists());
    let after = agreed(&spec, t);
    assert_eq!(
        (after.snapshots, after.data_files),
        (before.snapshots, before.data_files)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_spark_run_kills_the_driver_and_fails_the_job() {
    let (_dir, spec, config) = setup("spark-sigterm", "engine = \"spark\"", "10m", None);
    let t = "spark.stopped";
    make_table(&spec, t, SHAPE);
    let before = agreed(&spec, t);
    let env = SparkCluster::get().env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = Daemon::start(&config, &env);
    let (s, v) = d
        .post_when_free(&format!("/api/v1/tables/{t}/compact"), None)
        .await;
    assert_eq!(s, 202, "{v}");
    let job = v["job_id"].as_str().unwrap().to_string();
    let run_dir = icemaint::spark::run_dir(&job);
    // Bound by work: the driver process is up.
    let mut waited = 0;
    while processes_with(path_str(&run_dir)).is_empty() {
        waited += 1;
        assert!(
            waited < 3000,
            "no driver process appeared:\n{}",
            d.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    d.stop();
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    assert!(
        processes_with(path_str(&run_dir)).is_empty(),
        "driver left behind"
    );
    assert!(log.contains("spark run cancelled"), "{log}");
    // The job is recorded as failed (or, had the drain been cut short, abandoned).
    let d = Daemon::start(&config, &env);
    let (s, j) = d.get(&format!("/api/v1/jobs/{job}")).await;
    assert_eq!(s, 200, "{j}");
    assert!(
        matches!(j["status"].as_str(), Some("failed" | "abandoned")),
        "{j}"
    );
    drop(d);
    let after = agreed(&spec, t);
    assert_eq!(
        (after.snapshots, after.data_files),
        (before.snapshots, before.data_files)
    );
}
