//! A real Spark standalone cluster on 127.0.0.1 for the Spark-engine tests: one master and one
//! worker (1 core, 1 GiB) from the pip-installed PySpark's `spark-class`, started once and shared
//! by every test that asks for it ([`SparkCluster::get`]). Both run under the harness's watchdog,
//! so they stop when the test process ends (even when it is killed).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Peers, Supervised, path_str};
use crate::ops_util::{free_port, http};

pub struct SparkCluster {
    /// `spark://127.0.0.1:<port>`.
    pub master_url: String,
    /// The master's web UI port (`/json/` lists the applications).
    pub ui_port: u16,
    /// The PySpark package directory (`SPARK_HOME`).
    pub home: PathBuf,
    master: Supervised,
    _worker: Supervised,
}

static CLUSTER: OnceLock<SparkCluster> = OnceLock::new();

impl SparkCluster {
    /// The shared cluster, started on first use with one registered worker.
    pub fn get() -> &'static SparkCluster {
        CLUSTER.get_or_init(SparkCluster::start)
    }

    fn start() -> SparkCluster {
        let home = spark_home();
        let class = home.join("bin/spark-class");
        let port = free_port().to_string();
        let home_s = path_str(&home).to_string();
        let env = [
            ("SPARK_HOME", home_s.as_str()),
            ("SPARK_LOCAL_IP", "127.0.0.1"),
            ("SPARK_MASTER_HOST", "127.0.0.1"),
            // The web UIs announce this host, which the harness waits for.
            ("SPARK_PUBLIC_DNS", "127.0.0.1"),
        ];
        let master = Supervised::start(
            "spark-master",
            &class,
            &[
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--webui-port",
                &free_port().to_string(),
            ],
            &env,
            "MasterWebUI",
        );
        let master_url = format!("spark://127.0.0.1:{port}");
        let work = crate::harness::TestDir::new("spark-worker");
        let work_dir = path_str(work.path()).to_string();
        let worker = Supervised::start(
            "spark-worker",
            &class,
            &[
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                "127.0.0.1",
                "--webui-port",
                &free_port().to_string(),
                "--cores",
                "1",
                "--memory",
                "1g",
                "--work-dir",
                &work_dir,
                &master_url,
            ],
            &env,
            "WorkerWebUI",
        );
        // The work directory lives as long as the cluster (the process).
        std::mem::forget(work);
        let c = SparkCluster {
            master_url,
            ui_port: master.port(),
            home,
            master,
            _worker: worker,
        };
        c.wait_for_worker();
        c
    }

    /// The master's `/json/` status.
    pub fn status(&self) -> Value {
        let addr = format!("127.0.0.1:{}", self.ui_port);
        http(&addr, "GET", "/json/", &[])
            .ok()
            .and_then(|r| serde_json::from_str(&r.body).ok())
            .unwrap_or(Value::Null)
    }

    /// The finished application `id` as the master lists it, if it does.
    pub fn completed_app(&self, id: &str) -> Option<Value> {
        self.status()["completedapps"]
            .as_array()?
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
    }

    fn wait_for_worker(&self) {
        let start = Instant::now();
        while self.status()["aliveworkers"].as_u64().unwrap_or(0) < 1 {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no spark worker registered; master log:\n{}",
                self.master.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The `[spark]` section of an icemaint config for this cluster (SQLite JDBC catalogs).
    pub fn config_toml(&self, timeout: &str) -> String {
        let peers = Peers::get();
        let iceberg = peers.installed("jars/iceberg-spark-runtime-3.5_2.12-1.10.2.jar", "spark");
        let sqlite = peers.installed("jars/sqlite-jdbc.jar", "spark");
        format!(
            "[spark]\nmaster = \"{}\"\nsubmit = \"{}\"\njars = [\"{}\", \"{}\"]\ntimeout = \"{timeout}\"\n\n\
             [spark.conf]\n\"spark.driver.host\" = \"127.0.0.1\"\n\"spark.driver.bindAddress\" = \"127.0.0.1\"\n\
             \"spark.driver.memory\" = \"512m\"\n\"spark.executor.memory\" = \"512m\"\n\"spark.cores.max\" = \"1\"\n\
             \"spark.ui.enabled\" = \"false\"\n\"spark.sql.shuffle.partitions\" = \"2\"\n",
            self.master_url,
            self.home.join("bin/spark-submit").display(),
            iceberg.display(),
            sqlite.display(),
        )
    }

    /// The environment icemaint runs spark-submit with.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SPARK_HOME".into(), path_str(&self.home).into()),
            ("SPARK_LOCAL_IP".into(), "127.0.0.1".into()),
            (
                "PYSPARK_PYTHON".into(),
                path_str(Peers::get().python()).into(),
            ),
        ]
    }
}

/// The pip-installed PySpark's directory: Spark's launch scripts and jars.
fn spark_home() -> PathBuf {
    let py = Peers::get().python();
    let out = std::process::Command::new(py)
        .args([
            "-c",
            "import os, pyspark; print(os.path.dirname(pyspark.__file__))",
        ])
        .output()
        .expect("run the peers' python");
    assert!(
        out.status.success(),
        "pyspark is not installed in the peers' venv"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Processes whose command line contains `needle` (a run's spec directory): none may outlive
/// their job.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}
