//! The daemon end to end: `icemaint check`, property reconciliation on real catalogs (tables made
//! and read back by PyIceberg), every HTTP endpoint including error cases, and clean shutdown.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{CatalogSpec, RestCatalogServer, TestDir, make_table, table_info};

/// The repository's shipped policies.
pub fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// Writes an icemaint config for `spec` into `dir` and returns its path.
pub fn write_config(dir: &TestDir, spec: &CatalogSpec, policies: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "{}\n[store]\nurl = \"sqlite://{}\"\n\n[policies]\ndir = \"{}\"\n{extra}",
        spec.config_toml(),
        dir.join("state.db").display(),
        policies.display()
    );
    let path = dir.join("icemaint.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `icemaint` with arguments; returns (exit code, stdout, stderr).
pub fn icemaint(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_icemaint"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `icemaint serve`, stopped with SIGTERM on drop.
pub struct Daemon {
    child: Option<Child>,
    pub base: String,
    log: PathBuf,
}

impl Daemon {
    /// Starts `icemaint serve --config <config>` listening on a free port (via the environment
    /// override, which also exercises it) and waits for `/healthz`.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let log = config.with_extension("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_icemaint"));
        cmd.args(["serve", "--config"])
            .arg(config)
            .env("ICEMAINT__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("ICEMAINT__SERVER__REFRESH_INTERVAL_SECONDS", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon::adopt(cmd.spawn().unwrap(), port, log)
    }

    /// Wraps an already spawned icemaint that listens on `port` and waits until it listens.
    pub fn adopt(child: Child, port: u16, log: PathBuf) -> Daemon {
        let mut d = Daemon {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("icemaint exited early ({status}):\n{}", d.log_text());
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "icemaint did not listen:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// How the process ended when it ended by itself (a crash point), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn stop(mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("icemaint did not stop within 40 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET `path`: (status, body as JSON or as a string).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POST `path` with an optional JSON body and bearer token.
    pub async fn post(&self, path: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
        let mut req = reqwest::Client::new().post(format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POST like [`Daemon::post`] (no token), again while the table is busy (409): a start-up
    /// reconciliation holds the table's lock for a moment. Panics after 20 s of 409s.
    pub async fn post_when_free(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        for _ in 0..100 {
            let (s, v) = self.post(path, body.clone(), None).await;
            if s != 409 {
                return (s, v);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{path}: still busy after 20 s")
    }

    /// Polls `GET path` until `pred` holds. The bound only stops a hung test: generous, so a
    /// loaded 2-core machine running the suite's slow tests side by side does not trip it.
    pub async fn wait_for(
        &self,
        path: &str,
        what: &str,
        pred: impl Fn(u16, &Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (s, v) = self.get(path).await;
            if pred(s, &v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: last {s} {v}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until job `id` is no longer running and returns it.
    pub async fn wait_job(&self, id: &str) -> Value {
        self.wait_for(&format!("/api/v1/jobs/{id}"), "job to finish", |s, v| {
            s == 200 && v["status"] != "running"
        })
        .await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const DESIRED: &[(&str, &str)] = &[
    ("read.split.target-size", "268435456"),
    ("write.distribution-mode", "hash"),
    ("write.metadata.delete-after-commit.enabled", "true"),
    ("write.metadata.previous-versions-max", "10"),
];

fn assert_reconciled(info: &Value) {
    assert_eq!(info["format_version"], 2, "{info}");
    for (k, v) in DESIRED {
        assert_eq!(info["properties"][*k], *v, "{k} in {info}");
    }
}

/// Creates v1 tables with PyIceberg (a custom property on one), runs the daemon until the
/// start-up reconciliation finished, and reads the result back with PyIceberg.
async fn reconcile_on(spec: &CatalogSpec, dir: &TestDir) {
    let small = ["--appends", "3", "--rows", "50", "--format-version", "1"];
    make_table(
        spec,
        "metrics.rollups_1m",
        &[&small[..], &["--property", "custom.key=keep"]].concat(),
    );
    make_table(spec, "metrics.repartitioned_data", &small);
    make_table(spec, "metrics.unwatched", &small);
    let config = write_config(dir, spec, &repo_policies(), "");
    let d = Daemon::start(&config, &[]);
    for t in ["metrics.rollups_1m", "metrics.repartitioned_data"] {
        d.wait_for(&format!("/api/v1/tables/{t}"), "reconciliation", |s, v| {
            s == 200 && v["properties_in_sync"] == true
        })
        .await;
    }
    let jobs = d.get("/api/v1/jobs?kind=reconcile").await.1;
    let n = jobs["jobs"].as_array().unwrap().len();
    assert_eq!(n, 2, "one start-up reconcile per watched table: {jobs}");
    assert_eq!(d.stop(), 0);

    let r = table_info(spec, "metrics.rollups_1m");
    assert_reconciled(&r);
    assert_eq!(
        r["properties"]["custom.key"], "keep",
        "keys the policy does not name stay"
    );
    assert_reconciled(&table_info(spec, "metrics.repartitioned_data"));
    // A table no policy selects is never touched.
    let u = table_info(spec, "metrics.unwatched");
    assert_eq!(u["format_version"], 1);
    assert!(
        u["properties"].get("write.distribution-mode").is_none(),
        "{u}"
    );
}

#[tokio::test]
async fn reconciles_properties_on_sql_catalog() {
    let dir = TestDir::new("reconcile-sql");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    reconcile_on(&spec, &dir).await;
}

#[tokio::test]
async fn reconciles_properties_on_rest_catalog() {
    let dir = TestDir::new("reconcile-rest");
    let rest = RestCatalogServer::start(&dir.join("warehouse"));
    let spec = CatalogSpec::rest(rest.uri());
    reconcile_on(&spec, &dir).await;
}

#[tokio::test]
async fn http_endpoints_and_their_errors() {
    let dir = TestDir::new("http");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    make_table(
        &spec,
        "metrics.rollups_1m",
        &["--appends", "4", "--rows", "20"],
    );
    // A private copy of the policies, so the test can break one.
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for f in ["rollups.toml", "repartitioned.toml"] {
        std::fs::copy(repo_policies().join(f), policies.join(f)).unwrap();
    }
    let config = write_config(&dir, &spec, &policies, "");
    let d = Daemon::start(&config, &[]);

    assert_eq!(d.get("/healthz").await.0, 200);
    d.wait_for("/readyz", "readiness", |s, _| s == 200).await;
    let t = d
        .wait_for("/api/v1/tables", "table list", |_, v| {
            v["tables"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(t["tables"][0]["table"], "metrics.rollups_1m");
    assert_eq!(t["tables"][0]["data_files"], 4);
    assert_eq!(t["tables"][0]["small_files"], 4);

    let (s, one) = d.get("/api/v1/tables/metrics.rollups_1m").await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["policy"], "rollups");
    d.wait_for("/api/v1/tables/metrics.rollups_1m", "reconcile", |_, v| {
        v["properties_in_sync"] == true
    })
    .await;
    let one = d.get("/api/v1/tables/metrics.rollups_1m").await.1;
    let changed: Vec<&str> = one["property_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert!(changed.contains(&"write.distribution-mode"), "{one}");

    let metrics = d.get("/metrics").await.1;
    let text = metrics.as_str().unwrap();
    for needle in [
        "icemaint_table_data_files{table=\"metrics.rollups_1m\"} 4",
        "icemaint_table_small_files{table=\"metrics.rollups_1m\"} 4",
        "icemaint_table_snapshots{table=\"metrics.rollups_1m\"}",
        "icemaint_table_average_file_bytes{table=\"metrics.rollups_1m\"}",
        "icemaint_property_drift_detected_total{table=\"metrics.rollups_1m\"}",
        "icemaint_property_drift_corrected_total{table=\"metrics.rollups_1m\"}",
        "icemaint_jobs_total{kind=\"reconcile\"",
        "icemaint_catalog_up 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    // 404s and 400s, all JSON.
    for (path, status) in [
        ("/api/v1/tables/metrics.nope", 404),
        ("/api/v1/tables/nodot", 400),
        ("/api/v1/jobs?limit=0", 400),
        ("/api/v1/jobs?limit=abc", 400),
        ("/api/v1/jobs?bogus=1", 400),
        ("/api/v1/jobs?kind=vacuum", 400),
        ("/api/v1/jobs/not-a-uuid", 400),
        ("/api/v1/jobs/01a20f69-2d06-746b-bb04-90a0a9fd8171", 404),
        ("/api/v1/nothing-here", 404),
    ] {
        let (s, v) = d.get(path).await;
        assert_eq!(s, status, "{path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {v}"
        );
    }

    let jobs = d.get("/api/v1/jobs?table=metrics.rollups_1m").await;
    assert_eq!(jobs.0, 200);
    let id = jobs.1["jobs"][0]["id"].as_str().unwrap().to_string();
    let job = d.get(&format!("/api/v1/jobs/{id}")).await.1;
    assert_eq!(job["table"], "metrics.rollups_1m");
    assert_eq!(job["kind"], "reconcile");
    assert_eq!(job["trigger"], "startup");

    // Manual trigger: 202 with a job id that finishes (nothing left to do: skipped). The
    // start-up reconciliation may still hold the table for a moment.
    let (s, v) = d
        .post_when_free("/api/v1/tables/metrics.rollups_1m/reconcile", None)
        .await;
    assert_eq!(s, 202, "{v}");
    let job = d.wait_job(v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "skipped", "{job}");
    assert_eq!(job["trigger"], "manual");
    assert_eq!(
        d.post("/api/v1/tables/metrics.nope/reconcile", None, None)
            .await
            .0,
        404
    );

    // Reload: fine, then broken (old policies stay), then fixed.
    assert_eq!(d.post("/api/v1/reload", None, None).await.0, 200);
    std::fs::write(
        policies.join("broken.toml"),
        "version = 1\ntables = [\"*.x\"]\nbogus = 1\n",
    )
    .unwrap();
    let (s, v) = d.post("/api/v1/reload", None, None).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["problems"][0]
            .as_str()
            .unwrap()
            .contains("broken.toml:3:"),
        "{v}"
    );
    assert_eq!(
        d.get("/api/v1/tables/metrics.rollups_1m").await.0,
        200,
        "old policies kept"
    );
    std::fs::remove_file(policies.join("broken.toml")).unwrap();

    // SIGTERM: clean exit 0.
    assert_eq!(d.stop(), 0);
}

#[tokio::test]
async fn unreachable_catalog_is_not_ready_and_a_clear_cli_error() {
    let dir = TestDir::new("unreachable");
    let port = free_port(); // nothing listens there
    let spec = CatalogSpec::rest(format!("http://127.0.0.1:{port}"));
    let config = write_config(&dir, &spec, &repo_policies(), "");
    let d = Daemon::start(&config, &[]);
    assert_eq!(d.get("/healthz").await.0, 200);
    let v = d
        .wait_for("/readyz", "a readiness verdict", |s, v| {
            s == 503 && v["reason"].is_string()
        })
        .await;
    assert_eq!(v["catalog"], false, "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains(&port.to_string()),
        "{v}"
    );
    api_errors_before_the_catalog(&d).await;
    assert_eq!(d.stop(), 0);

    let (code, _, err) = icemaint(&["tables", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    let line = err.trim();
    assert_eq!(line.lines().count(), 1, "one line: {err}");
    assert!(
        line.starts_with("error: ") && line.contains(&port.to_string()),
        "{err}"
    );
}

/// A catalog that is down when the daemon starts: not ready at first; once the catalog answers,
/// every watched table still gets its start-up reconciliation (retried at each refresh).
#[tokio::test]
async fn start_up_reconciliation_waits_for_the_catalog() {
    let dir = TestDir::new("startup-retry");
    let wh = dir.join("warehouse");
    let port = {
        let rest = RestCatalogServer::start(&wh);
        let spec = CatalogSpec::rest(rest.uri());
        make_table(
            &spec,
            "metrics.rollups_1m",
            &["--appends", "2", "--rows", "10"],
        );
        rest.port()
    }; // the catalog stops here
    let spec = CatalogSpec::rest(format!("http://127.0.0.1:{port}"));
    let config = write_config(&dir, &spec, &repo_policies(), "");
    let d = Daemon::start(
        &config,
        &[("ICEMAINT__SERVER__REFRESH_INTERVAL_SECONDS", "1")],
    );
    d.wait_for("/readyz", "not ready while the catalog is down", |s, _| {
        s == 503
    })
    .await;
    let _rest = RestCatalogServer::start_on(&wh, port);
    d.wait_for(
        "/api/v1/tables/metrics.rollups_1m",
        "start-up reconciliation once the catalog answers",
        |s, v| s == 200 && v["properties_in_sync"] == true,
    )
    .await;
    d.wait_for(
        "/api/v1/jobs?table=metrics.rollups_1m",
        "the start-up job to succeed",
        |_, v| {
            v["jobs"].as_array().is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| j["trigger"] == "startup" && j["status"] == "succeeded")
            })
        },
    )
    .await;
    assert_eq!(d.stop(), 0);
}

/// With the catalog down, the API still answers what it can decide without it: a bad request is
/// a 400 (not a 502), `force` without a token a 403; errors axum produces itself (405, 413) are
/// JSON like every other; only a valid request that needs the catalog gets the 502.
async fn api_errors_before_the_catalog(d: &Daemon) {
    let t = "/api/v1/tables/metrics.rollups_1m";
    // No connection reuse: after a 413 the server closes the connection it did not drain.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let cases: Vec<(reqwest::Method, String, Option<Value>, u16, &str)> = vec![
        (
            reqwest::Method::POST,
            format!("{t}/compact"),
            Some(serde_json::json!({"bogus-option": 1})),
            400,
            "bogus-option",
        ),
        (
            reqwest::Method::POST,
            format!("{t}/plan"),
            Some(serde_json::json!({"bogus-option": 1})),
            400,
            "bogus-option",
        ),
        (
            reqwest::Method::POST,
            format!("{t}/expire"),
            Some(serde_json::json!({"older-than": "5x"})),
            400,
            "older-than",
        ),
        (
            reqwest::Method::POST,
            format!("{t}/remove-orphans"),
            Some(serde_json::json!({"older-than": "1h", "force": true})),
            403,
            "token",
        ),
        (
            reqwest::Method::POST,
            format!("{t}/compact"),
            Some(serde_json::json!({"where": "x".repeat(3 << 20)})),
            413,
            "2 mib",
        ),
        (
            reqwest::Method::DELETE,
            "/api/v1/jobs".into(),
            None,
            405,
            "method",
        ),
        (
            reqwest::Method::PUT,
            format!("{t}/compact"),
            None,
            405,
            "method",
        ),
        (reqwest::Method::POST, format!("{t}/compact"), None, 502, ""),
    ];
    for (method, path, body, status, needle) in cases {
        let mut req = client.request(method.clone(), format!("{}{path}", d.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let got = r.status().as_u16();
        let json = r
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
        let allow = r.headers().get("allow").is_some();
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or_default();
        assert_eq!(got, status, "{method} {path}: {v}");
        assert!(json, "{method} {path}: not JSON");
        let error = v["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            !error.is_empty() && error.contains(needle),
            "{method} {path}: {v}"
        );
        assert!(status != 405 || allow, "{method} {path}: 405 without Allow");
    }
}

#[test]
fn check_reports_every_problem_with_file_and_line() {
    let dir = TestDir::new("check");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("a.toml"),
        "version = 1\ntables = [\"metrics.*\"]\n[compaction]\nschedule = \"every tuesday\"\ntarget-file-size-bytes = \"huge\"\nnot-an-option = 3\n",
    )
    .unwrap();
    std::fs::write(
        policies.join("b.toml"),
        "version = 1\ntables = [\n  \"*.rollups\",\n]\ncolour = \"blue\"\n",
    )
    .unwrap();
    let spec = CatalogSpec::rest("http://127.0.0.1:1");
    let config = write_config(&dir, &spec, &policies, "");
    let (code, out, err) = icemaint(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    let a = policies.join("a.toml").display().to_string();
    let b = policies.join("b.toml").display().to_string();
    for expected in [
        format!("{a}:4: "), // bad cron
        format!("{a}:5: "), // bad size
        format!("{a}:6: "), // unknown option
        format!("{b}:5: unknown key 'colour'"),
        format!("{b}:3: selector '*.rollups' overlaps 'metrics.*'"),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in:\n{err}"
        );
    }

    // The shipped policies are valid.
    let good = write_config(&dir, &spec, &repo_policies(), "");
    let (code, out, err) = icemaint(&["check", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 policies"), "{out}");

    // A bad config file: one line naming file and line, exit 2.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[catalog]\ntype = \"rest\"\nuri = \"x\"\n[server]\nlisten = 5\n",
    )
    .unwrap();
    let (code, _, err) = icemaint(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.starts_with(&format!("{}:5:", bad.display())), "{err}");

    // Two bad config keys and a bad policy: all three in one run, because the policy directory
    // can still be told from the broken config; exit 2.
    let policies2 = dir.join("policies2");
    std::fs::create_dir_all(&policies2).unwrap();
    std::fs::write(
        policies2.join("c.toml"),
        "version = 1\ntables = [\"metrics.events\"]\nshape = \"round\"\n",
    )
    .unwrap();
    let both = dir.join("both.toml");
    std::fs::write(
        &both,
        "[catalog]\ntype = \"rest\"\nuri = \"x\"\ncolour = \"blue\"\n[server]\nlisten = 5\n\
         [policies]\ndir = \"policies2\"\n",
    )
    .unwrap();
    let (code, out, err) = icemaint(&["check", "--config", both.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    let c = policies2.join("c.toml").display().to_string();
    let both = both.display().to_string();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with(&format!("{both}:4: unknown key 'catalog.colour'")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("{both}:6: 'server.listen' must be a string")),
        "{err}"
    );
    assert!(
        lines[2].starts_with(&format!("{c}:3: unknown key 'shape'")),
        "{err}"
    );
    // A missing config file: non-zero, one line.
    let (code, _, err) = icemaint(&["serve", "--config", "/nonexistent/icemaint.toml"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/icemaint.toml"), "{err}");
}

/// `icemaint demo` as a new user runs it: from an empty directory outside the repository, with
/// no `--policies` (the platform's policies are built into the binary).
#[tokio::test]
async fn demo_comes_up_and_converges() {
    let dir = TestDir::new("demo");
    let cwd = dir.join("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let demo_dir = cwd.join("icemaint-demo");
    let port = free_port();
    let log = std::fs::File::create(dir.join("demo.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_icemaint"))
        .current_dir(&cwd)
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .env("ICEMAINT__SERVER__REFRESH_INTERVAL_SECONDS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon::adopt(child, port, dir.join("demo.log"));
    let started = Instant::now();
    d.wait_for("/readyz", "readiness", |s, _| s == 200).await;
    for t in ["metrics.repartitioned_data", "metrics.rollups_1m"] {
        d.wait_for(
            &format!("/api/v1/tables/{t}"),
            "demo reconciliation",
            |s, v| s == 200 && v["properties_in_sync"] == true,
        )
        .await;
    }
    // How fast it converges is for bench/, not a test on a shared machine; the log says it.
    eprintln!(
        "[daemon] demo converged in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let metrics = d.get("/metrics").await.1;
    let text = metrics.as_str().unwrap().to_string();
    for needle in [
        "icemaint_table_data_files{table=\"metrics.repartitioned_data\"} 192",
        "icemaint_table_small_files{table=\"metrics.rollups_1m\"} 108",
        "icemaint_property_drift_corrected_total{table=\"metrics.rollups_1m\"} 5",
        "icemaint_property_drift_detected_total{table=\"metrics.repartitioned_data\"} 5",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert_eq!(d.stop(), 0, "Ctrl-C/SIGTERM stops the demo cleanly");
    // The embedded policies were written next to the demo, identical to the repository's.
    for name in ["repartitioned.toml", "rollups.toml"] {
        assert_eq!(
            std::fs::read_to_string(demo_dir.join("policies").join(name)).unwrap(),
            std::fs::read_to_string(repo_policies().join(name)).unwrap(),
            "{name}"
        );
    }

    let spec = CatalogSpec::sql(
        demo_dir.join("catalog.db"),
        format!("file://{}", demo_dir.join("warehouse").display()),
    );
    for t in ["metrics.repartitioned_data", "metrics.rollups_1m"] {
        let info = table_info(&spec, t);
        assert_reconciled(&info);
        assert_eq!(info["snapshots"].as_array().unwrap().len(), 12, "{t}");
    }
}

#[tokio::test]
async fn manifest_rewrite_leaves_a_handful_and_the_same_rows() {
    let dir = TestDir::new("manifests");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    // Each append is its own snapshot with its own manifest.
    make_table(
        &spec,
        "metrics.rollups_5m",
        &["--appends", "120", "--rows", "20"],
    );
    let before = crate::harness::verify(&spec, "metrics.rollups_5m", true, false);
    assert!(before.agree);
    let config = write_config(&dir, &spec, &repo_policies(), "");
    let cfg = config.to_str().unwrap();
    let manifests = || {
        let (code, out, err) = icemaint(&["tables", "--config", cfg, "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0]["manifests"].as_u64().unwrap()
    };
    assert_eq!(manifests(), 120);
    let (code, out, err) = icemaint(&[
        "rewrite-manifests",
        "metrics.rollups_5m",
        "--config",
        cfg,
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["manifests_replaced"], 120, "{job}");
    let after_count = manifests();
    assert!(
        after_count <= 5,
        "a handful of manifests, got {after_count}"
    );

    let info = table_info(&spec, "metrics.rollups_5m");
    let snaps = info["snapshots"].as_array().unwrap();
    let last = snaps.last().unwrap();
    assert_eq!(last["operation"], "replace", "{last}");
    assert_eq!(last["summary"]["icemaint.job-id"], job["job_id"], "{last}");
    let after = crate::harness::verify(&spec, "metrics.rollups_5m", true, true);
    assert!(after.agree, "{}", after.raw);
    assert_eq!(
        (after.rows, &after.checksum),
        (before.rows, &before.checksum)
    );
    assert_eq!(after.data_files, before.data_files);

    // Nothing left to do: the second run is a no-op without a snapshot.
    let (code, out, _) = icemaint(&[
        "rewrite-manifests",
        "metrics.rollups_5m",
        "--config",
        cfg,
        "--json",
    ]);
    assert_eq!(code, 0);
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["status"], "skipped", "{again}");
    assert_eq!(
        table_info(&spec, "metrics.rollups_5m")["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        snaps.len()
    );
}
