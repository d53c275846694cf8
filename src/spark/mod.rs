//! Spark as a compaction engine: one `rewrite_data_files` run handed to the platform's Spark
//! cluster through `spark-submit` and the driver shipped with icemaint
//! (`spark/rewrite_data_files.py`, built into the binary).
//!
//! icemaint stays in charge: the operation (`ops::compact`) plans first and holds the table's
//! lease; this module only turns the resolved options and icemaint's `[catalog]` into a run
//! ([`submit`]), supervises the driver ([`process`]: log streaming, timeout, cancellation, the
//! process group killed at the end) and reads its answer ([`report`]). Spark commits the
//! rewrite itself, atomically: a failed or killed run leaves the table as it was.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{CatalogConfig, SparkConfig};

pub mod process;
pub mod report;
pub mod submit;

pub use report::ResultRow;

/// The driver, built in: written next to each run's spec unless `[spark] driver` names one.
pub const DRIVER: &str = include_str!("../../spark/rewrite_data_files.py");

/// How long the reachability check of a `spark://` master waits for each host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SparkError {
    #[error(
        "option '{0}' is not a Spark rewrite_data_files option (icemaint's own): unset it or use engine native"
    )]
    Unsupported(String),
    #[error(
        "engine spark needs [spark] master in the config (spark://..., k8s://..., yarn, local[N])"
    )]
    NoMaster,
    #[error("spark catalog settings: {0}")]
    Catalog(String),
    #[error("spark master {master} unreachable: {reason}")]
    Unreachable { master: String, reason: String },
    #[error("writing the spark run's spec under {path}: {source}")]
    Spec {
        path: String,
        source: std::io::Error,
    },
    #[error("starting spark-submit {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("spark run timed out after {0} ([spark] timeout); driver killed")]
    Timeout(String),
    #[error("spark run cancelled (shutdown or lost lease); driver killed")]
    Cancelled,
    #[error("spark run failed ({status}): {line}")]
    Failed { status: String, line: String },
}

impl SparkError {
    /// A problem with the request or the configuration, known before anything runs.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Unsupported(_) | Self::NoMaster)
    }
}

/// One run: which table, under which job, with which merged options (the policy's, then the
/// run's overrides).
pub struct Run<'a> {
    pub spark: &'a SparkConfig,
    pub catalog: &'a CatalogConfig,
    pub table: &'a str,
    pub job_id: &'a str,
    pub options: &'a BTreeMap<String, String>,
}

/// A finished run: what Spark reported.
#[derive(Debug, Clone)]
pub struct Finished {
    pub application_id: Option<String>,
    pub row: ResultRow,
    pub driver_pid: u32,
}

/// Checks what can be checked before a job is recorded: a master is configured and every
/// option is Spark's.
pub fn check(spark: &SparkConfig, options: &BTreeMap<String, String>) -> Result<(), SparkError> {
    if spark.master.is_none() {
        return Err(SparkError::NoMaster);
    }
    submit::spark_options(options).map(drop)
}

/// Submits the run and supervises it to its end. `cancel` (shutdown, a lost lease) kills it.
pub async fn run(r: &Run<'_>, cancel: &CancellationToken) -> Result<Finished, SparkError> {
    let master = r.spark.master.as_deref().ok_or(SparkError::NoMaster)?;
    let spec = submit::Spec::new(r.catalog, r.table, r.job_id, r.options)?;
    reachable(master).await?;
    let dir = RunDir::create(r.job_id)?;
    let spec_path = dir.write(
        "spec.json",
        &serde_json::to_vec(&spec).expect("serializable"),
    )?;
    let driver = match &r.spark.driver {
        Some(d) => d.clone(),
        None => dir
            .write("rewrite_data_files.py", DRIVER.as_bytes())?
            .display()
            .to_string(),
    };
    let home = std::env::var("SPARK_HOME").ok();
    let program = submit::submit_program(r.spark, home.as_deref());
    let args = submit::submit_args(r.spark, master, &driver, &spec_path);
    let d = process::drive(&program, &args, r.spark.timeout, cancel, r.table).await?;
    let failed = |line: Option<String>| SparkError::Failed {
        status: d
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "no exit status".into()),
        line: line.unwrap_or_else(|| "the driver gave no reason".into()),
    };
    if let Some(e) = &d.error {
        return Err(failed(Some(e.clone())));
    }
    match (&d.row, d.status) {
        (Some(row), Some(s)) if s.success() => Ok(Finished {
            application_id: d.application_id.clone(),
            row: row.clone(),
            driver_pid: d.pid,
        }),
        _ => Err(failed(report::error_line(&d.tail))),
    }
}

/// A `spark://h1:7077,h2:7077` master must accept a connection on one of its hosts: an
/// unreachable master fails the job at once, instead of after Spark's own minute of retries.
/// Other masters (k8s, yarn, local) are left to spark-submit.
async fn reachable(master: &str) -> Result<(), SparkError> {
    let Some(hosts) = master.strip_prefix("spark://") else {
        return Ok(());
    };
    let mut reason = String::new();
    for host in hosts.split(',') {
        let host = host.trim_end_matches('/');
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(host)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => reason = format!("{host}: {e}"),
            Err(_) => reason = format!("{host}: no answer in {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(SparkError::Unreachable {
        master: master.to_string(),
        reason,
    })
}

/// A private directory (0700) for one run's spec (0600) and driver, removed when dropped.
struct RunDir(PathBuf);

impl RunDir {
    fn create(job_id: &str) -> Result<Self, SparkError> {
        let path = std::env::temp_dir().join(format!("icemaint-spark-{job_id}"));
        let err = |source| SparkError::Spec {
            path: path.display().to_string(),
            source,
        };
        // A leftover of a crashed run of the same job id (never another job's).
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(err)?;
        Ok(Self(path))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, SparkError> {
        let path = self.0.join(name);
        let err = |source| SparkError::Spec {
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        f.write_all(bytes).map_err(err)?;
        Ok(path)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The path of a run's directory, for tests that check it is gone.
pub fn run_dir(job_id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("icemaint-spark-{job_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    #[test]
    fn the_spec_is_private() {
        let d = RunDir::create("unit-test-spec").unwrap();
        let p = d.write("spec.json", b"{}").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&d.0).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        drop(d);
        assert!(!Path::new(&p).exists());
    }

    #[tokio::test]
    async fn an_unreachable_master_is_told_at_once() {
        // A port nothing listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let master = format!("spark://127.0.0.1:{port}");
        let e = reachable(&master).await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("spark master {master} unreachable")),
            "{e}"
        );
        assert!(reachable("k8s://https://api:6443").await.is_ok());
    }

    #[test]
    fn check_needs_a_master() {
        let cfg = SparkConfig::default();
        assert!(matches!(
            check(&cfg, &BTreeMap::new()),
            Err(SparkError::NoMaster)
        ));
    }
}
