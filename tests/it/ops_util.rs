//! Runs the real `icemaint` binary for the ops tests (deploy, observe, api, status page): the demo
//! daemon on a free loopback port, stopped when dropped, plus a minimal HTTP client for it and for
//! Prometheus, and lookups of the system tools these tests need.
//!
//! The HTTP client speaks HTTP/1.0 on purpose: both hyper and Go's net/http then answer with a
//! plain body closed by the connection (no chunked encoding), which keeps it a few lines long.

// Each test module uses a different subset of the helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (tests run with it as their working directory, but say so explicitly).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the repository, read as text.
pub fn repo_file(rel: &str) -> String {
    let p = repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// The path of a system tool, or a panic naming the Debian package that provides it. Tests that
/// need a tool fail rather than skip, so a CI machine without it cannot pass silently.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!("{name} not found on PATH: install Debian package {package} (apt-get install -y {package})")
    })
}

/// The path of a tool on `PATH`, if any.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `timeout` describing `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.0 request to `addr` (`host:port`); `target` is the path with its query.
pub fn http(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {target} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Percent-encodes a query parameter value.
pub fn encode(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// A running `icemaint` process, killed when dropped.
pub struct Daemon {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl Daemon {
    /// `icemaint demo` in a fresh directory on a free port, once ready with both demo tables
    /// inspected and their start-up reconciliation finished.
    pub fn demo() -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("icemaint-ops-")
            .tempdir()
            .expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let d = Daemon::spawn(
            dir,
            &addr,
            &[
                "demo",
                "--listen",
                &addr,
                "--policies",
                &repo_root().join("policies").display().to_string(),
            ],
            &[],
        );
        d.wait_ready();
        d
    }

    /// Creates the demo catalog (`demo --setup-only`), then runs `icemaint serve` on its config
    /// with `env` added (for example `ICEMAINT__SERVER__TOKEN`).
    pub fn serve_demo_config(env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("icemaint-ops-")
            .tempdir()
            .expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let out = Command::new(env!("CARGO_BIN_EXE_icemaint"))
            .args(["demo", "--setup-only", "--listen", &addr, "--policies"])
            .arg(repo_root().join("policies"))
            .arg("--dir")
            .arg(dir.path())
            .output()
            .expect("run icemaint demo --setup-only");
        assert!(
            out.status.success(),
            "demo --setup-only failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("icemaint.toml").display().to_string();
        let d = Daemon::spawn(dir, &addr, &["serve", "--config", &config], env);
        d.wait_ready();
        d
    }

    fn spawn(dir: tempfile::TempDir, addr: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = dir.path().join("icemaint.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_icemaint"));
        cmd.args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log file"))
            .stderr(logf)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        if args.first() == Some(&"demo") {
            cmd.arg("--dir").arg(dir.path());
        }
        // Keep overrides meant for some other icemaint out of the test's daemon.
        for (k, _) in std::env::vars() {
            if k.starts_with("ICEMAINT__") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("spawn icemaint");
        Daemon {
            child,
            addr: addr.to_string(),
            dir,
            log,
        }
    }

    fn wait_ready(&self) {
        wait_for(
            Duration::from_secs(120),
            "icemaint to be ready with 2 tables",
            || {
                let r = self.get("/api/v1/tables").ok()?;
                let tables = r.json()["tables"].as_array()?.len();
                let ready = self.get("/readyz").ok()?.status == 200;
                let jobs = self.get("/api/v1/jobs").ok()?.json()["jobs"]
                    .as_array()?
                    .iter()
                    .filter(|j| j["status"] != "running")
                    .count();
                (ready && tables == 2 && jobs >= 2).then_some(())
            },
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, target: &str) -> std::io::Result<Response> {
        http(&self.addr, "GET", target, &[])
    }

    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        http(&self.addr, method, target, headers)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- icemaint log ({}) ---\n{}", self.addr, self.log());
        }
    }
}

/// A child process killed when dropped (Prometheus in the observe tests).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
