//! Three replicas on one PostgreSQL state store and one Postgres-backed SQL catalog, compacting a
//! table on a 10-second schedule while PyIceberg appends small files between fires: one replica
//! crashes mid-compaction (`ICEMAINT_CRASH_AT`), one pauses past its lease right before sending
//! its commit (`ICEMAINT_STOP_AT`, a SIGSTOP: its commit is built and validated) and is continued
//! after another replica took the table over, so only the fence stands between it and the commit.
//!
//! What must hold: every schedule fire ran at most once across the replicas; the paused replica
//! committed nothing after losing its lease and its job failed with the lease error; the job
//! history and the table's snapshots agree (each succeeded compaction's snapshots are in the
//! table, each `replace` snapshot belongs to a succeeded compaction); PyIceberg and DuckDB read
//! the same rows, all of them.
//!
//! The test is bounded by work, not by the clock: each step waits (polling, generously) for the
//! event it needs — a crash, a stopped process, a job's outcome — so a loaded machine only makes
//! it slower.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use icemaint::store::{JobRecord, Store};
use serde_json::Value;

use crate::daemon::{Daemon, write_config};
use crate::harness::{CatalogSpec, PostgresServer, TestDir, make_table, pyiceberg_ops, verify};

const T: &str = "metrics.fenced";
const ROWS: u64 = 200;
/// Short enough to wait out, long enough (renewed every 2 s) for a loaded 2-core machine.
const LEASE_SECONDS: &str = "6";
/// How long any single step may take before the test gives up (normally seconds).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `check` until it yields a value; on timeout panics with the replicas' logs.
async fn wait_for<T, F, Fut>(what: &str, replicas: &[&Daemon], mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = replicas.iter().map(|d| d.log_text()).collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n-----\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn compactions(store: &Store) -> Vec<JobRecord> {
    store
        .jobs(Some(T), Some("compaction"), 1000)
        .await
        .expect("job history")
}

/// The process state letter from `/proc/<pid>/stat` (`T`: stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}

/// Appends 3 small files (one per commit) through PyIceberg, as a writer between fires.
async fn append(spec: &CatalogSpec, index: u32) -> u64 {
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || {
        let index = index.to_string();
        let rows = ROWS.to_string();
        let args = ["--rows", &rows, "--appends", "3", "--index", &index];
        pyiceberg_ops(&spec, T, "append", &args);
    })
    .await
    .unwrap();
    3 * ROWS
}

/// Starts replica `name` (its own copy of `config`, so its own log next to it).
fn replica(name: &str, config: &Path, url: &str, extra: &[(&str, &str)]) -> Daemon {
    let own = config.with_file_name(format!("{name}.toml"));
    std::fs::copy(config, &own).unwrap();
    let mut env = vec![
        ("ICEMAINT__STORE__URL", url),
        ("ICEMAINT__SERVER__LEASE_SECONDS", LEASE_SECONDS),
    ];
    env.extend_from_slice(extra);
    Daemon::start(&own, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_postgres_run_each_fire_once_and_fence_a_paused_one() {
    let pg = PostgresServer::start();
    let dir = TestDir::new("replicas");
    let spec = CatalogSpec::sql_postgres(pg.url(), dir.uri("warehouse"));
    let s = spec.clone();
    tokio::task::spawn_blocking(move || {
        let args = ["--partition", "none", "--appends", "6", "--rows", "200"];
        make_table(&s, T, &args);
    })
    .await
    .unwrap();
    let mut rows = 6 * ROWS;
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("fenced.toml"),
        "version = 1\nname = \"fenced\"\ntables = [\"metrics.*\"]\n[compaction]\nschedule = \"*/10 * * * * *\"\nmin-input-files = 2\n",
    )
    .unwrap();
    let config = write_config(&dir, &spec, &policies, "");
    let url = pg.url();
    let store = Store::connect(&url).await.unwrap();

    // 1. Replica A claims a fire and crashes between the rewrite and the commit (like a kill -9).
    let mut a = replica(
        "a",
        &config,
        &url,
        &[("ICEMAINT_CRASH_AT", "compaction.rewritten")],
    );
    let deadline = Instant::now() + STEP_TIMEOUT;
    let status = loop {
        if let Some(status) = a.exit_status() {
            break status;
        }
        let waited = Instant::now() < deadline;
        assert!(waited, "replica A did not crash:\n{}", a.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status.code(), None, "killed by its crash point: {status}");
    let crashed = compactions(&store).await;
    assert_eq!(crashed.len(), 1, "{crashed:#?}");
    let crashed = crashed[0].clone();
    assert_eq!(crashed.status, "running", "{crashed:?}");

    // 2. Replica B takes the table over once A's lease expired, rewrites, builds and validates
    //    its commit, and stops (SIGSTOP) right before sending it, as a long pause would.
    rows += append(&spec, 10).await;
    let b = replica(
        "b",
        &config,
        &url,
        &[("ICEMAINT_STOP_AT", "commit.before-catalog")],
    );
    wait_for("replica B to stop mid-compaction", &[&b], || {
        std::future::ready((process_state(b.pid()) == Some('T')).then_some(()))
    })
    .await;
    let paused = compactions(&store).await;
    let paused: Vec<JobRecord> = paused
        .into_iter()
        .filter(|j| j.id != crashed.id && j.status == "running")
        .collect();
    assert_eq!(paused.len(), 1, "{paused:#?}");
    let paused = paused[0].clone();

    // 3. Replica C claims the next fire, takes the table over once B's lease expired, commits.
    let c = replica("c", &config, &url, &[]);
    let taken = wait_for("replica C to compact the table", &[&b, &c], || async {
        compactions(&store)
            .await
            .into_iter()
            .find(|j| j.status == "succeeded")
    })
    .await;

    // 4. B continues: its fence refuses the commit; its job fails with the lease error.
    b.signal("CONT");
    let lease_error = format!("lease on {T} lost: taken over by job ");
    let fenced = wait_for(
        "B's job to fail with the lease error",
        &[&b, &c],
        || async {
            store
                .job(&paused.id)
                .await
                .unwrap()
                .filter(|j| j.error.as_deref().is_some_and(|e| e.contains(&lease_error)))
        },
    )
    .await;
    assert_eq!(fenced.status, "failed", "{fenced:?}");

    // 5. Three live replicas (A restarted); small files keep coming; the next fires run once.
    let a = replica("a2", &config, &url, &[]);
    rows += append(&spec, 20).await;
    let after = taken.fire_ms.expect("a scheduled job records its fire");
    let later = wait_for(
        "a later compaction with three replicas",
        &[&a, &b, &c],
        || async {
            compactions(&store).await.into_iter().find(|j| {
                j.status == "succeeded" && j.fire_ms.is_some_and(|f| f > after) && j.id != taken.id
            })
        },
    )
    .await;
    for d in [a, b, c] {
        assert_eq!(d.stop(), 0);
    }

    let jobs = store.jobs(Some(T), None, 10_000).await.unwrap();
    check_history(&jobs, &crashed, &paused, &lease_error);
    let spec2 = spec.clone();
    let (info, read) = tokio::task::spawn_blocking(move || {
        (
            crate::harness::table_info(&spec2, T),
            verify(&spec2, T, true, false),
        )
    })
    .await
    .unwrap();
    check_snapshots(
        &jobs,
        &info,
        &[&crashed.id, &paused.id],
        [&taken.id, &later.id],
    );
    assert!(read.agree, "PyIceberg and DuckDB disagree: {}", read.raw);
    assert_eq!(read.rows, rows, "{}", read.raw);
    assert_eq!(
        read.reader("duckdb"),
        Some((read.rows, read.checksum.clone())),
        "{}",
        read.raw
    );
}

/// Every (kind, fire time) ran at most once; the crashed job was failed by a sweeper and the
/// paused one with the lease error.
fn check_history(jobs: &[JobRecord], crashed: &JobRecord, paused: &JobRecord, lease_error: &str) {
    let mut fires: BTreeMap<(String, i64), &str> = BTreeMap::new();
    for j in jobs {
        if let Some(fire) = j.fire_ms
            && let Some(other) = fires.insert((j.kind.clone(), fire), &j.id)
        {
            panic!(
                "fire {} {fire} ran twice: {other} and {}\n{jobs:#?}",
                j.kind, j.id
            );
        }
    }
    assert!(fires.len() >= 4, "fires run: {fires:?}");
    let by_id = |id: &str| jobs.iter().find(|j| j.id == id).unwrap();
    let crashed = by_id(&crashed.id);
    assert_eq!(crashed.status, "failed", "{crashed:?}");
    assert_eq!(crashed.error.as_deref(), Some(icemaint::jobs::ABANDONED));
    let paused = by_id(&paused.id);
    assert_eq!(paused.status, "failed", "{paused:?}");
    let error = paused.error.as_deref().unwrap_or_default();
    assert!(error.starts_with(lease_error), "{error}");
    assert!(
        paused.detail["snapshot_ids"]
            .as_array()
            .is_none_or(|ids| ids.is_empty()),
        "{paused:?}"
    );
}

/// The job history and the table agree: each succeeded or partial compaction's snapshots are in
/// the table, each `replace` snapshot names (icemaint.job-id) a succeeded or partial compaction
/// that lists it, and neither the crashed nor the paused job has one.
fn check_snapshots(jobs: &[JobRecord], info: &Value, never: &[&str], committed: [&str; 2]) {
    let snapshots = info["snapshots"].as_array().expect("snapshots");
    let in_table: HashSet<i64> = snapshots
        .iter()
        .map(|s| s["snapshot_id"].as_i64().unwrap())
        .collect();
    let ids = |j: &JobRecord| -> Vec<i64> {
        j.detail["snapshot_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    };
    let landed = |status: &str| status == "succeeded" || status == "partial";
    for j in jobs
        .iter()
        .filter(|j| j.kind == "compaction" && landed(&j.status))
    {
        for id in ids(j) {
            assert!(
                in_table.contains(&id),
                "job {} snapshot {id} not in the table",
                j.id
            );
        }
    }
    let mut replaced_by = HashSet::new();
    for s in snapshots.iter().filter(|s| s["operation"] == "replace") {
        let id = s["snapshot_id"].as_i64().unwrap();
        let job_id = s["summary"]["icemaint.job-id"].as_str().expect("job id");
        assert!(!never.contains(&job_id), "snapshot {id} by {job_id}");
        let job = jobs.iter().find(|j| j.id == job_id);
        let job = job.unwrap_or_else(|| panic!("snapshot {id}: no job {job_id}"));
        assert!(landed(&job.status), "snapshot {id} by a {} job", job.status);
        assert!(ids(job).contains(&id), "{job:?} does not list {id}");
        replaced_by.insert(job_id);
    }
    for id in committed {
        assert!(replaced_by.contains(id), "no replace snapshot of {id}");
    }
}
