//! Soak: a PyIceberg writer (`soak_writer.py`) appends and deletes rows on a SQLite-catalog table
//! round after round, keeping a ledger of the rows that must exist, while the daemon compacts every
//! 3 seconds (small target files, `min-input-files = 2`) and expires snapshots every 5. Faults are
//! injected by the writer's progress: every 8 rounds icemaint is SIGKILLed (preferably while a job
//! runs) and restarted, and a helper holds the catalog's write lock across the next commit
//! (`hold_sqlite_lock.py`), as a stopped catalog would. At the end the daemon runs one more
//! compaction and stops cleanly, and:
//! - PyIceberg and DuckDB read exactly the ledger's rows (count and checksum);
//! - the table has fewer data files than the writer's appends created;
//! - no job is left `running` (the killed daemons' jobs were failed by the sweeper).
//!
//! Bounded by work (`ICEMAINT_SOAK_ROUNDS` writer rounds, default 24: about a minute) with
//! generous timeouts; `ICEMAINT_SOAK_MINUTES` keeps the writer going that long (scripts/soak.sh).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use icemaint::store::Store;
use serde_json::Value;

use crate::daemon::{Daemon, write_config};
use crate::harness::{CatalogSpec, Peers, TestDir, path_str, verify};

const T: &str = "db.soak";
/// Faults repeat every this many writer rounds: a kill at round 2, a catalog lock at 5.
const CYCLE: u64 = 8;
const LEASE_SECONDS: &str = "6";
/// Bounds only a hung step (a fault, the final compaction, the writer's whole run).
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

const POLICY: &str = r#"version = 1
name = "soak"
tables = ["db.*"]

[compaction]
schedule = "*/3 * * * * *"
strategy = "binpack"
target-file-size-bytes = 16384
min-input-files = 2

[expire]
schedule = "*/5 * * * * *"
older-than = "10s"
retain-last = 3
"#;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
    )
}

/// Runs a peers script to completion (blocking); returns its stdout, asserting success.
fn peers_script(script: &str, args: &[String]) -> String {
    let peers = Peers::get();
    let out = Command::new(peers.python())
        .arg(peers.scripts_dir().join(script))
        .args(args)
        .env("ICEBERG_PEERS", peers.home())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The writer, running in the background; killed on drop if it has not finished.
struct Writer {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Writer {
    fn output(&self) -> String {
        format!(
            "--- writer stdout ---\n{}\n--- writer stderr ---\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ledger(path: &Path) -> Value {
    // Replaced atomically by the writer: never half-written.
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Starts the daemon's incarnation `n` (its own copy of `config`, so its own log).
fn start_daemon(config: &Path, n: usize) -> Daemon {
    let own = config.with_file_name(format!("icemaint-{n}.toml"));
    std::fs::copy(config, &own).unwrap();
    Daemon::start(&own, &[("ICEMAINT__SERVER__LEASE_SECONDS", LEASE_SECONDS)])
}

async fn jobs(d: &Daemon) -> Vec<Value> {
    let (s, v) = d.get(&format!("/api/v1/jobs?table={T}&limit=1000")).await;
    assert_eq!(s, 200, "{v}");
    v["jobs"].as_array().cloned().unwrap_or_default()
}

/// SIGKILLs the daemon, preferably while one of its jobs runs (waits a few seconds for one).
async fn kill_mid_job(d: Daemon) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut mid_job = false;
    while Instant::now() < deadline {
        if jobs(&d).await.iter().any(|j| j["status"] == "running") {
            mid_job = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.signal("KILL");
    drop(d); // reaps it
    mid_job
}

/// Holds the catalog's write lock across the next commit (anyone's) for 3 s.
fn hold_catalog_lock(db: &Path, metadata: &Path, stderr: &Path) -> Value {
    let peers = Peers::get();
    let mut child = Command::new(peers.python())
        .arg(peers.scripts_dir().join("hold_sqlite_lock.py"))
        .args(["--db", path_str(db), "--watch", path_str(metadata)])
        .args(["--hold", "3", "--timeout", "60"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap();
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "holder: {status} {lines:?}");
    let last = lines.last().expect("holder printed nothing");
    serde_json::from_str(last).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_writer_with_compaction_kills_and_a_locked_catalog_keeps_every_row() {
    let rounds = env_u64("ICEMAINT_SOAK_ROUNDS").unwrap_or(24);
    let minutes = env_u64("ICEMAINT_SOAK_MINUTES").unwrap_or(0);
    let started = Instant::now();
    let dir = TestDir::new("soak");
    let db = dir.join("catalog.db");
    let spec = CatalogSpec::sql(&db, dir.uri("warehouse"));
    let mut catalog_args = spec.args();
    catalog_args.extend(["--table".into(), T.into()]);
    let args: Vec<String> = ["create".to_string()]
        .into_iter()
        .chain(catalog_args.iter().cloned())
        .collect();
    tokio::task::spawn_blocking(move || peers_script("soak_writer.py", &args))
        .await
        .unwrap();
    let metadata = dir.join("warehouse/db/soak/metadata");
    assert!(metadata.is_dir(), "{}", metadata.display());

    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("soak.toml"), POLICY).unwrap();
    let config = write_config(&dir, &spec, &policies, "");
    let mut incarnation = 1;
    let mut daemon = start_daemon(&config, incarnation);

    // The writer, in the background.
    let ledger_path = dir.join("ledger.json");
    let peers = Peers::get();
    let writer_stdout = dir.join("writer.stdout");
    let writer_stderr = dir.join("writer.stderr");
    let child = Command::new(peers.python())
        .arg(peers.scripts_dir().join("soak_writer.py"))
        .arg("run")
        .args(&catalog_args)
        .args(["--ledger", path_str(&ledger_path)])
        .args(["--rounds", &rounds.to_string()])
        .args(["--minutes", &minutes.to_string()])
        .env("ICEBERG_PEERS", peers.home())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(std::fs::File::create(&writer_stdout).unwrap())
        .stderr(std::fs::File::create(&writer_stderr).unwrap())
        .spawn()
        .unwrap();
    let mut writer = Writer {
        child,
        stdout: writer_stdout,
        stderr: writer_stderr,
    };

    // Faults, driven by the writer's progress, until it is done.
    let writer_deadline = Instant::now() + STEP_TIMEOUT + Duration::from_secs(minutes * 60);
    let (mut kills, mut kills_mid_job, mut locks) = (0u64, 0u64, 0u64);
    let mut next_fault = 2u64;
    let status = loop {
        if let Some(status) = writer.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < writer_deadline,
            "the writer did not finish\n{}\n{}",
            writer.output(),
            daemon.log_text()
        );
        let done = if ledger_path.exists() {
            ledger(&ledger_path)["rounds_done"].as_u64().unwrap()
        } else {
            0
        };
        if done >= next_fault {
            if next_fault % CYCLE == 2 {
                if kill_mid_job(daemon).await {
                    kills_mid_job += 1;
                }
                kills += 1;
                incarnation += 1;
                daemon = start_daemon(&config, incarnation);
                next_fault += 3;
            } else {
                let stderr = dir.join(format!("holder-{locks}.stderr"));
                let (db, md) = (db.clone(), metadata.clone());
                let report =
                    tokio::task::spawn_blocking(move || hold_catalog_lock(&db, &md, &stderr))
                        .await
                        .unwrap();
                eprintln!("[soak] catalog lock: {report}");
                locks += 1;
                next_fault += CYCLE - 3;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success(), "writer: {status}\n{}", writer.output());
    let written = ledger(&ledger_path);
    let rounds_done = written["rounds_done"].as_u64().unwrap();
    assert!(rounds_done >= rounds, "{written}");
    assert!(kills >= 2 && locks >= 1, "kills {kills}, locks {locks}");
    let writer_done_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    // One more compaction after the last write, and no job left running (the killed daemons'
    // jobs are failed by the sweeper within about a lease and a half).
    let wait_until = Instant::now() + STEP_TIMEOUT;
    let final_jobs = loop {
        let all = jobs(&daemon).await;
        let compacted = all.iter().any(|j| {
            j["kind"] == "compaction"
                && j["created_ms"].as_i64().unwrap_or(0) > writer_done_ms
                && ["succeeded", "skipped", "partial"].contains(&j["status"].as_str().unwrap())
        });
        if compacted && !all.iter().any(|j| j["status"] == "running") {
            break all;
        }
        assert!(
            Instant::now() < wait_until,
            "no final compaction, or a job stuck running: {all:#?}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let log = daemon.log_text();
    assert_eq!(daemon.stop(), 0, "{log}");

    // The store agrees once the daemon is gone.
    let store = Store::connect(&format!("sqlite://{}", dir.join("state.db").display()))
        .await
        .unwrap();
    let stored = store.jobs(Some(T), None, 10_000).await.unwrap();
    let running: Vec<_> = stored.iter().filter(|j| j.status == "running").collect();
    assert!(running.is_empty(), "jobs stuck running: {running:#?}");
    let count = |kind: &str, status: &str| {
        stored
            .iter()
            .filter(|j| j.kind == kind && j.status == status)
            .count()
    };
    let compactions = count("compaction", "succeeded") + count("compaction", "partial");
    assert!(compactions >= 1, "no compaction landed: {final_jobs:#?}");

    // Every row of the ledger, no other, through PyIceberg and DuckDB.
    let s = spec.clone();
    let read = tokio::task::spawn_blocking(move || verify(&s, T, true, false))
        .await
        .unwrap();
    assert!(read.agree, "PyIceberg and DuckDB disagree: {}", read.raw);
    let expected = (
        written["rows"].as_u64().unwrap(),
        written["checksum"].as_str().unwrap().to_string(),
    );
    assert_eq!(
        read.reader("pyiceberg"),
        Some(expected.clone()),
        "{}",
        read.raw
    );
    assert_eq!(read.reader("duckdb"), Some(expected), "{}", read.raw);
    let appended_files = written["appends"].as_u64().unwrap();
    assert!(
        read.data_files < appended_files,
        "{} data files, the writer's appends made {appended_files}: {}",
        read.data_files,
        read.raw
    );
    let mut outcomes = std::collections::BTreeMap::<(String, String), usize>::new();
    for j in &stored {
        *outcomes
            .entry((j.kind.clone(), j.status.clone()))
            .or_default() += 1;
    }
    eprintln!("[soak] jobs by kind and outcome: {outcomes:?}");
    eprintln!(
        "[soak] {rounds_done} rounds, {} commits ({} retried tries), {} rows, {} data files \
         (from {appended_files} appended); {kills} kills ({kills_mid_job} mid-job), {locks} \
         catalog locks; {compactions} compactions and {} expiries landed, {} jobs failed; {:.0} s",
        written["commits"],
        written["retries"],
        written["rows"],
        read.data_files,
        count("expire", "succeeded"),
        stored.iter().filter(|j| j.status == "failed").count(),
        started.elapsed().as_secs_f64()
    );
}
