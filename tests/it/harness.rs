//! Test harness: real third-party Iceberg components ("peers") for the integration tests.
//!
//! The peers are installed by `tests/peers/setup.sh` into `$ICEBERG_PEERS` (default
//! `$HOME/.cache/iceberg-peers`): a Python venv with PyIceberg, DuckDB, PySpark and moto, the Iceberg
//! Spark runtime, a mini Iceberg REST catalog server (Java) and s3s-fs. The Python tools that drive
//! them live in this repository under `tests/peers/scripts` and print one JSON object each.
//!
//! What this module gives a test:
//! - [`Peers`]: where things are, and [`Peers::py`] / [`Peers::py_with_status`] to run a tool and get
//!   its JSON.
//! - Servers bound to `127.0.0.1` on a free port: [`RestCatalogServer`], [`S3Server`] (s3s-fs or
//!   moto). Each is stopped when dropped, and a watchdog stops it when the test process exits in any
//!   way (panic, `SIGKILL`), so no server outlives the tests.
//! - [`CatalogSpec`]: a REST or SQLite catalog (optionally with an S3 endpoint), turned into the
//!   tools' catalog flags; typed wrappers [`make_table`], [`verify`], [`table_info`],
//!   [`pyiceberg_ops`], [`tool`].
//! - [`TestDir`]: a per-test temporary directory, kept (and its path printed) when the test fails.
//! - For Rust-side clients of the same catalog: [`CatalogSpec::config_toml`] (icemaint's
//!   `[catalog]` section), [`CatalogSpec::sql_url`], [`S3Access::iceberg_props`].
//!
//! Environment: `ICEBERG_PEERS` (install location), `ICEMAINT_PEERS_TIMEOUT_SECS` (per tool run,
//! default 900), `ICEMAINT_KEEP_TEST_DIRS=1` (keep every test directory), `REST_CATALOG_JAVA_OPTS`.
//! Each tool run prints `[peers] <command> -> <status> in <s>` to stderr (see it with
//! `--nocapture`, or in the output of a failing test).
//!
//! Everything is safe to use from tests running in parallel threads: servers pick their own free
//! port (port 0, the bound port is read back from the server's log), every server and every test
//! directory is unique.
//!
//! ```ignore
//! let dir = TestDir::new("rest");
//! let rest = RestCatalogServer::start(&dir.join("warehouse"));
//! let spec = CatalogSpec::rest(rest.uri());
//! make_table(&spec, "db.t", &["--appends", "10", "--rows", "100"]);
//! let v = verify(&spec, "db.t", true, false);
//! assert!(v.agree);
//! ```

// A test binary warns about every helper that no test uses (yet); they are all meant for use.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Message of the panic raised when the peers are missing.
const NOT_INSTALLED: &str = "peers not installed: run tests/peers/setup.sh";

/// Credentials that [`S3Server::start_s3s`] checks (moto accepts any).
pub const S3_ACCESS_KEY: &str = "AKIDTEST";
/// Secret key matching [`S3_ACCESS_KEY`].
pub const S3_SECRET_KEY: &str = "SECRETTEST";
/// Region the S3 clients are configured with.
pub const S3_REGION: &str = "us-east-1";

/// Default time limit for one Python tool run; override with `ICEMAINT_PEERS_TIMEOUT_SECS`.
const DEFAULT_TOOL_TIMEOUT_SECS: u64 = 900;
/// How long a server may take to report its port.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Locating the peers and running the Python tools
// ---------------------------------------------------------------------------------------------

/// The installed peers and this repository's tools. Get it with [`Peers::get`].
#[derive(Debug)]
pub struct Peers {
    home: PathBuf,
    python: PathBuf,
    scripts: PathBuf,
}

static PEERS: OnceLock<Peers> = OnceLock::new();

/// Output of one Python tool run.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// The JSON object the tool printed on stdout.
    pub json: Value,
    /// The tool's exit status.
    pub status: ExitStatus,
    /// Everything the tool wrote to stderr.
    pub stderr: String,
}

impl Peers {
    /// Locates the peers: `$ICEBERG_PEERS` or `$HOME/.cache/iceberg-peers`, the venv python in
    /// `venv/bin/python`, the tools in `<crate>/tests/peers/scripts`.
    ///
    /// # Panics
    /// With "peers not installed: run tests/peers/setup.sh" when the venv python is missing.
    pub fn get() -> &'static Peers {
        PEERS.get_or_init(|| {
            let home = match std::env::var_os("ICEBERG_PEERS") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => {
                    let home = std::env::var_os("HOME").expect("HOME is not set");
                    PathBuf::from(home).join(".cache").join("iceberg-peers")
                }
            };
            let python = home.join("venv").join("bin").join("python");
            if !python.is_file() {
                panic!("{NOT_INSTALLED} (no {})", python.display());
            }
            let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/scripts");
            Peers {
                home,
                python,
                scripts,
            }
        })
    }

    /// `$ICEBERG_PEERS`: where setup.sh installed everything.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The venv python that runs the tools.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// `tests/peers/scripts` of this repository.
    pub fn scripts_dir(&self) -> &Path {
        &self.scripts
    }

    /// Path of an installed file under `$ICEBERG_PEERS`; panics with the install hint if it is
    /// missing (`part` is the setup.sh part that installs it).
    pub fn installed(&self, rel: &str, part: &str) -> PathBuf {
        let p = self.home.join(rel);
        if !p.exists() {
            panic!("{NOT_INSTALLED} {part} (no {})", p.display());
        }
        p
    }

    /// Runs `tests/peers/scripts/<script>` with the venv python and returns the JSON object it
    /// printed on stdout.
    ///
    /// # Panics
    /// When the tool exits non-zero (message: the command and the tail of its stderr), prints no
    /// JSON object, or runs longer than `ICEMAINT_PEERS_TIMEOUT_SECS` (default 900 s).
    pub fn py(script: &str, args: &[&str]) -> Value {
        let out = Self::py_with_status(script, args);
        if !out.status.success() {
            panic!(
                "{} exited with {}\n--- stderr (tail) ---\n{}\n--- stdout JSON ---\n{}",
                command_line(script, args),
                out.status,
                tail(&out.stderr, 40),
                out.json
            );
        }
        out.json
    }

    /// Like [`Peers::py`], but returns the JSON together with the exit status instead of panicking
    /// on a non-zero exit (e.g. `verify.py` exits 1 when the readers disagree). Still panics when
    /// there is no JSON object on stdout or on timeout.
    pub fn py_with_status(script: &str, args: &[&str]) -> ToolOutput {
        let peers = Peers::get();
        let path = peers.scripts.join(script);
        assert!(path.is_file(), "no tool {}", path.display());
        let mut cmd = Command::new(&peers.python);
        cmd.arg(&path)
            .args(args)
            .env("ICEBERG_PEERS", &peers.home)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            // Tests pass S3 settings explicitly; a developer's shell must not change them.
            .env_remove("PEERS_S3_ENDPOINT")
            .env_remove("PEERS_S3_ACCESS_KEY")
            .env_remove("PEERS_S3_SECRET_KEY")
            .env_remove("PEERS_S3_REGION")
            .env_remove("PEERS_CATALOG_TOKEN");
        let started = Instant::now();
        let (status, stdout, stderr) =
            run_with_timeout(cmd, tool_timeout(), &command_line(script, args));
        // Shown with --nocapture or for failing tests: where the time goes.
        eprintln!(
            "[peers] {} -> {status} in {:.1} s",
            command_line(script, args),
            started.elapsed().as_secs_f64()
        );
        let json = match parse_json_object(&stdout) {
            Some(v) => v,
            None => panic!(
                "{} ({status}) printed no JSON object\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
                command_line(script, args),
                tail(&stdout, 40),
                tail(&stderr, 40)
            ),
        };
        ToolOutput {
            json,
            status,
            stderr,
        }
    }
}

fn tool_timeout() -> Duration {
    let secs = std::env::var("ICEMAINT_PEERS_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_TOOL_TIMEOUT_SECS);
    Duration::from_secs(secs)
}

fn command_line(script: &str, args: &[&str]) -> String {
    let mut s = script.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The JSON object on stdout: the whole output, or else the last line that opens an object and
/// everything after it (in case something else was printed before).
fn parse_json_object(stdout: &str) -> Option<Value> {
    if let Ok(v @ Value::Object(_)) = serde_json::from_str(stdout.trim()) {
        return Some(v);
    }
    let starts: Vec<usize> = stdout
        .match_indices('{')
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || stdout.as_bytes()[i - 1] == b'\n')
        .collect();
    starts
        .iter()
        .rev()
        .find_map(|&i| match serde_json::from_str(stdout[i..].trim()) {
            Ok(v @ Value::Object(_)) => Some(v),
            _ => None,
        })
}

/// Runs `cmd` (stdin closed), collecting stdout and stderr; kills it after `timeout`.
fn run_with_timeout(
    mut cmd: Command,
    timeout: Duration,
    what: &str,
) -> (ExitStatus, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let out = reader_thread(child.stdout.take().expect("stdout"));
    let err = reader_thread(child.stderr.take().expect("stderr"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "{what} timed out after {timeout:?}\n--- stderr (tail) ---\n{}",
                tail(&stderr, 40)
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    (status, stdout, stderr)
}

fn reader_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A path as `&str` (test paths are temporary directories, always UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non UTF-8 path {}", p.display()))
}

// ---------------------------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------------------------

/// A per-test temporary directory (`$TMPDIR/icemaint-it-<label>-XXXXXX`), removed on drop — unless
/// the thread is panicking (a failing test) or `ICEMAINT_KEEP_TEST_DIRS` is set: then it is kept
/// and its path is printed to stderr.
#[derive(Debug)]
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    /// Creates a fresh unique directory; `label` (e.g. the test name) makes it recognizable.
    pub fn new(label: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("icemaint-it-{label}-"))
            .tempdir()
            .expect("create temporary directory");
        // Canonical, so paths compare equal to what Java/Python report (e.g. no /tmp symlinks).
        let path = dir.path().canonicalize().expect("canonicalize temp dir");
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// `file://` URI of `path().join(rel)` (an empty `rel` gives the directory itself).
    pub fn uri(&self, rel: &str) -> String {
        let p = if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        };
        format!("file://{}", path_str(&p))
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let keep = thread::panicking() || std::env::var_os("ICEMAINT_KEEP_TEST_DIRS").is_some();
        if let Some(dir) = self.dir.take()
            && keep
        {
            let path = dir.keep();
            eprintln!("kept test directory {}", path.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Supervised server processes
// ---------------------------------------------------------------------------------------------

/// Runs a server under `sh` with a watchdog. The test process holds the only write end of the
/// shell's stdin: when it closes it (drop) or dies (even by SIGKILL), the watchdog reads EOF and
/// stops the server (SIGTERM, SIGKILL after 10 s). The shell exits when the server exits.
/// Arguments: $1 = log file, $2... = the server command. Prints the server's PID on stdout.
const WATCHDOG: &str = r#"log=$1; shift
exec 3<&0
"$@" </dev/null >>"$log" 2>&1 &
j=$!
echo "$j"
exec >/dev/null 2>&1
(
  read -r _ <&3 || :
  kill -TERM "$j" 2>/dev/null
  i=0
  while [ "$i" -lt 100 ] && kill -0 "$j" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "$j" 2>/dev/null
) &
w=$!
exec 3<&-
wait "$j"
rc=$?
kill "$w" 2>/dev/null
exit "$rc"
"#;

/// A server process started under [`WATCHDOG`]; stops it on drop.
#[derive(Debug)]
pub struct Supervised {
    kind: &'static str,
    shell: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    port: u16,
    log: PathBuf,
    /// Holds the log; kept when a test fails.
    _dir: TestDir,
}

impl Supervised {
    /// Starts `program args` with its output in a fresh log, then waits until the log contains
    /// `marker` followed by `http://127.0.0.1:<port>` and the port accepts connections.
    pub fn start(
        kind: &'static str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        marker: &str,
    ) -> Supervised {
        let dir = TestDir::new(&format!("{kind}-server"));
        let log = dir.join(format!("{kind}.log"));
        fs::write(&log, "").expect("create server log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg(format!("{kind}-watchdog"))
            .arg(&log)
            .arg(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut shell = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {kind} server: {e}"));
        let stdin = shell.stdin.take();
        let mut line = String::new();
        BufReader::new(shell.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read server pid");
        let pid: u32 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{kind}: bad pid line {line:?}"));
        let mut s = Supervised {
            kind,
            shell,
            stdin,
            pid,
            port: 0,
            log,
            _dir: dir,
        };
        s.port = s.wait_for_port(marker);
        s
    }

    fn wait_for_port(&mut self, marker: &str) -> u16 {
        let start = Instant::now();
        loop {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(port) = port_after(&text, marker) {
                // The server printed this after binding; connecting double-checks it is ours.
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return port;
                }
            }
            if let Some(st) = self.shell.try_wait().expect("try_wait") {
                panic!(
                    "{} server exited during start ({st}); log:\n{}",
                    self.kind,
                    tail(&text, 40)
                );
            }
            if start.elapsed() > SERVER_START_TIMEOUT {
                panic!(
                    "{} server not ready after {SERVER_START_TIMEOUT:?}; log:\n{}",
                    self.kind,
                    tail(&text, 40)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&fs::read_to_string(&self.log).unwrap_or_default(), n)
    }

    /// The port the server reported in its log.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn is_running(&mut self) -> bool {
        matches!(self.shell.try_wait(), Ok(None))
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: the watchdog stops the server
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if !matches!(self.shell.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Should not happen (the watchdog escalates to SIGKILL after 10 s); the shell has not
        // reaped the server, so its PID is still the server's.
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.pid.to_string())
            .status();
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

/// The port in the first `http://127.0.0.1:<port>` after `marker` in `text`.
fn port_after(text: &str, marker: &str) -> Option<u16> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let rest = &rest[rest.find("http://127.0.0.1:")? + "http://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok().filter(|&p| p != 0)
}

/// The mini Iceberg REST catalog (`tests/peers/rest-catalog`, Iceberg's `CatalogHandlers` over a
/// JdbcCatalog on SQLite `WAREHOUSE/catalog.db`, tables under `file://WAREHOUSE/<ns>/<table>`).
/// Stopped on drop.
#[derive(Debug)]
pub struct RestCatalogServer {
    proc: Supervised,
    warehouse: PathBuf,
}

impl RestCatalogServer {
    /// Starts a server on a free port of 127.0.0.1 for `warehouse_dir` (created if missing) and
    /// waits until it serves requests (about 1 s). JVM options: `REST_CATALOG_JAVA_OPTS` (default
    /// `-Xmx512m`).
    pub fn start(warehouse_dir: &Path) -> RestCatalogServer {
        Self::start_on(warehouse_dir, 0)
    }

    /// [`RestCatalogServer::start`] on a given port (0: a free one), e.g. to bring a stopped
    /// catalog back where its clients look for it; the catalog lives in the warehouse directory.
    pub fn start_on(warehouse_dir: &Path, port: u16) -> RestCatalogServer {
        let peers = Peers::get();
        let jar = peers.installed("rest/mini-rest-catalog.jar", "rest");
        let lib = peers.installed("rest/lib", "rest");
        fs::create_dir_all(warehouse_dir).expect("create warehouse dir");
        let wh = warehouse_dir
            .canonicalize()
            .expect("canonicalize warehouse");
        let java_opts =
            std::env::var("REST_CATALOG_JAVA_OPTS").unwrap_or_else(|_| "-Xmx512m".into());
        let classpath = format!("{}:{}/*", path_str(&jar), path_str(&lib));
        let warehouse_uri = format!("file://{}", path_str(&wh));
        let jdbc = format!("jdbc:sqlite:{}/catalog.db", path_str(&wh));
        let port = port.to_string();
        let mut args: Vec<&str> = java_opts.split_whitespace().collect();
        args.extend([
            "-cp",
            &classpath,
            "org.apache.iceberg.rest.MiniRestCatalogServer",
            "--port",
            &port,
            "--warehouse",
            &warehouse_uri,
            "--jdbc-uri",
            &jdbc,
        ]);
        let proc = Supervised::start("rest", Path::new("java"), &args, &[], "listening on");
        RestCatalogServer {
            proc,
            warehouse: wh,
        }
    }

    /// `http://127.0.0.1:PORT` (no prefix, no auth).
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.proc.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.proc.port
    }

    /// The (canonical) warehouse directory.
    pub fn warehouse(&self) -> &Path {
        &self.warehouse
    }

    /// PID of the Java process.
    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    /// The last `n` lines of the server log (stack traces of HTTP 500 answers end up there).
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// The server log (in its own temporary directory, kept when a test fails).
    pub fn log_path(&self) -> &Path {
        &self.proc.log
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }
}

/// The test-only REST catalog that vends per-table S3 credentials
/// (`tests/peers/scripts/vended_rest_catalog.py`): PyIceberg's SqlCatalog on SQLite, warehouse
/// `s3://lake/wh` on an S3 server, every request but the token exchange refused (401) without
/// `Authorization: Bearer` [`VendedRestCatalog::TOKEN`]; LoadTable's `config` carries the
/// S3 endpoint, keys, region and path-style access. Stopped on drop.
#[derive(Debug)]
pub struct VendedRestCatalog {
    proc: Supervised,
    s3: S3Access,
    _dir: TestDir,
}

impl VendedRestCatalog {
    /// The bearer token the catalog requires.
    pub const TOKEN: &'static str = "it-vended-token";
    /// `client_id:client_secret` that `POST /v1/oauth/tokens` exchanges for [`Self::TOKEN`].
    pub const CREDENTIAL: &'static str = "it-client:it-secret";

    /// Starts the catalog on a free port of 127.0.0.1, its warehouse on `s3` (bucket `lake`,
    /// created if missing).
    pub fn start(s3: &S3Access) -> VendedRestCatalog {
        let peers = Peers::get();
        let dir = TestDir::new("vended-rest");
        let script = peers.scripts_dir().join("vended_rest_catalog.py");
        let db = dir.join("catalog.db");
        let mut args = vec![
            path_str(&script).to_string(),
            "--db".into(),
            path_str(&db).to_string(),
            "--warehouse".into(),
            "s3://lake/wh".into(),
            "--token".into(),
            Self::TOKEN.into(),
            "--credential".into(),
            Self::CREDENTIAL.into(),
        ];
        args.extend(s3.args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let home = path_str(peers.home()).to_string();
        let envs = [
            ("PYTHONUNBUFFERED", "1"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("ICEBERG_PEERS", home.as_str()),
        ];
        let proc = Supervised::start("vended-rest", peers.python(), &args, &envs, "listening on");
        VendedRestCatalog {
            proc,
            s3: s3.clone(),
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT` (no prefix).
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.proc.port)
    }

    /// The catalog as the tools see it: the token, and the S3 flags (DuckDB's `iceberg_scan` of
    /// a metadata file needs them; readers through the catalog get the vended ones).
    pub fn tools_spec(&self) -> CatalogSpec {
        CatalogSpec::Rest {
            uri: self.uri(),
            s3: Some(self.s3.clone()),
            token: Some(Self::TOKEN.into()),
        }
    }

    /// The server log: one line per request (method, path, status).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.proc.log).unwrap_or_default()
    }
}

/// Endpoint and credentials of an S3 server, as the tools and clients need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Access {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl S3Access {
    /// The tools' S3 flags (`--s3-endpoint` and keys).
    pub fn args(&self) -> Vec<String> {
        vec![
            "--s3-endpoint".into(),
            self.endpoint.clone(),
            "--s3-access-key".into(),
            self.access_key.clone(),
            "--s3-secret-key".into(),
            self.secret_key.clone(),
            "--s3-region".into(),
            self.region.clone(),
        ]
    }

    /// FileIO properties for iceberg-rust (`s3.endpoint`, keys, region, path-style access, no
    /// AWS config or EC2 metadata lookups).
    pub fn iceberg_props(&self) -> BTreeMap<String, String> {
        [
            ("s3.endpoint", self.endpoint.as_str()),
            ("s3.access-key-id", self.access_key.as_str()),
            ("s3.secret-access-key", self.secret_key.as_str()),
            ("s3.region", self.region.as_str()),
            ("s3.path-style-access", "true"),
            ("s3.disable-config-load", "true"),
            ("s3.disable-ec2-metadata", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// A local S3 server on a free port of 127.0.0.1: s3s-fs (S3 over a directory, checks SigV4
/// signatures with [`S3_ACCESS_KEY`]/[`S3_SECRET_KEY`]) or moto (in memory, any credentials).
/// Clients must use path-style addressing and plain http. Stopped on drop.
#[derive(Debug)]
pub struct S3Server {
    proc: Supervised,
    data_dir: Option<PathBuf>,
}

impl S3Server {
    /// Starts s3s-fs serving `data_dir` (created if missing): each top-level directory is a bucket
    /// (`mkdir data_dir/lake` or CreateBucket; names need 3-63 characters).
    pub fn start_s3s(data_dir: &Path) -> S3Server {
        let bin = Peers::get().installed("cargo/bin/s3s-fs", "s3s");
        fs::create_dir_all(data_dir).expect("create s3s data dir");
        let data = data_dir.canonicalize().expect("canonicalize s3s data dir");
        let args = [
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--access-key",
            S3_ACCESS_KEY,
            "--secret-key",
            S3_SECRET_KEY,
            path_str(&data),
        ];
        let envs = [("RUST_LOG", "s3s_fs=info"), ("NO_COLOR", "1")];
        let proc = Supervised::start("s3s", &bin, &args, &envs, "server is running at");
        S3Server {
            proc,
            data_dir: Some(data),
        }
    }

    /// Starts moto's S3 mock (data lives in memory and is gone when it stops).
    pub fn start_moto() -> S3Server {
        let bin = Peers::get().installed("venv/bin/moto_server", "moto");
        let envs = [("PYTHONUNBUFFERED", "1")];
        let args = ["-H", "127.0.0.1", "-p", "0"];
        let proc = Supervised::start("moto", &bin, &args, &envs, "Running on");
        S3Server {
            proc,
            data_dir: None,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proc.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.proc.port
    }

    /// Access key id clients must sign with.
    pub fn access_key(&self) -> &'static str {
        S3_ACCESS_KEY
    }

    /// Secret access key clients must sign with.
    pub fn secret_key(&self) -> &'static str {
        S3_SECRET_KEY
    }

    /// Region clients should use.
    pub fn region(&self) -> &'static str {
        S3_REGION
    }

    /// Endpoint and credentials in one value (for [`CatalogSpec::with_s3`]).
    pub fn access(&self) -> S3Access {
        S3Access {
            endpoint: self.endpoint(),
            access_key: S3_ACCESS_KEY.into(),
            secret_key: S3_SECRET_KEY.into(),
            region: S3_REGION.into(),
        }
    }

    /// s3s-fs: the directory holding the buckets; moto: `None`.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// PID of the server process.
    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// The server log (in its own temporary directory, kept when a test fails).
    pub fn log_path(&self) -> &Path {
        &self.proc.log
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }
}

/// A throwaway PostgreSQL server (Debian's `postgresql` package) on a free port of 127.0.0.1,
/// trust authentication, user and database `postgres`, fsync off; stopped on drop (SIGTERM: the
/// clients must be gone first, so declare it before them). Postgres refuses to run as root, so as
/// root the cluster belongs to, and the server runs as, the `postgres` user the package creates.
#[derive(Debug)]
pub struct PostgresServer {
    proc: Supervised,
    /// The cluster's directory (its own, world-traversable, so the `postgres` user reaches it).
    _data: TestDir,
}

impl PostgresServer {
    pub fn start() -> PostgresServer {
        let bin = postgres_bindir();
        let data = TestDir::new("postgres-data");
        let pgdata = data.join("pgdata");
        let as_root = run_ok(Command::new("id").arg("-u")).trim() == "0";
        // `setpriv` (util-linux) execs the server as `postgres`, so the supervised PID stays the
        // server's own and the watchdog's SIGTERM reaches it.
        let mut prefix: Vec<String> = Vec::new();
        if as_root {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(data.path(), fs::Permissions::from_mode(0o755))
                .expect("chmod postgres dir");
            fs::create_dir(&pgdata).expect("create pgdata");
            run_ok(Command::new("chown").args(["postgres:postgres", path_str(&pgdata)]));
            prefix = [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]
            .map(String::from)
            .to_vec();
        }
        let initdb = bin.join("initdb");
        let mut cmd = Command::new(prefix.first().map_or(path_str(&initdb), |p| p.as_str()));
        cmd.args(prefix.iter().skip(1))
            .args(if as_root {
                vec![path_str(&initdb)]
            } else {
                vec![]
            })
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--encoding=UTF8",
            ])
            .arg("-D")
            .arg(&pgdata);
        run_ok(&mut cmd);

        let port = crate::daemon::free_port();
        let server = bin.join("postgres");
        let script = format!("echo \"postgres starting on http://127.0.0.1:{port}\"; exec \"$@\"");
        let mut args: Vec<String> = vec!["-c".into(), script, "postgres-start".into()];
        args.extend(prefix.iter().cloned());
        args.extend([
            path_str(&server).to_string(),
            "-D".into(),
            path_str(&pgdata).to_string(),
            "-p".into(),
            port.to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            format!("unix_socket_directories={}", path_str(&pgdata)),
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "max_connections=50".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Supervised::start(
            "postgres",
            Path::new("sh"),
            &args,
            &[],
            "postgres starting on",
        );
        let pg = PostgresServer { proc, _data: data };
        // The port opens before the server accepts sessions ("the database system is starting
        // up"): wait until a real query answers.
        let start = Instant::now();
        loop {
            let out = Command::new(bin.join("psql"))
                .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(port.to_string())
                .args(["-d", "postgres", "-Atc", "select 1"])
                .output()
                .expect("run psql");
            if out.status.success() {
                break;
            }
            assert!(
                start.elapsed() < SERVER_START_TIMEOUT,
                "postgres not ready: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                pg.proc.log_tail(40)
            );
            thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.proc.port)
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or a panic naming the Debian package.
fn postgres_bindir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!("no PostgreSQL server under /usr/lib/postgresql: install Debian package postgresql (apt-get install -y postgresql)")
    })
}

/// Runs `cmd` to success and returns its stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Catalogs and typed tool wrappers
// ---------------------------------------------------------------------------------------------

/// A catalog as the tools see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSpec {
    /// An Iceberg REST catalog (e.g. [`RestCatalogServer::uri`]); `token`: the bearer token it
    /// requires, if any.
    Rest {
        uri: String,
        s3: Option<S3Access>,
        token: Option<String>,
    },
    /// A SQL catalog (PyIceberg SqlCatalog / iceberg-catalog-sql, catalog name `default`) in a
    /// SQLite file or a PostgreSQL database; `warehouse` is a directory, `file:///dir` or
    /// `s3://bucket/prefix`.
    Sql {
        db: SqlDb,
        warehouse: String,
        s3: Option<S3Access>,
    },
}

/// Where a SQL catalog keeps its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlDb {
    Sqlite(PathBuf),
    /// `postgres://user@host:port/db` (e.g. [`PostgresServer::url`]; not for the Spark tools).
    Postgres(String),
}

impl CatalogSpec {
    /// A REST catalog at `uri`.
    pub fn rest(uri: impl Into<String>) -> CatalogSpec {
        CatalogSpec::Rest {
            uri: uri.into(),
            s3: None,
            token: None,
        }
    }

    /// A SQLite SQL catalog; `warehouse` as in [`CatalogSpec::Sql`].
    pub fn sql(sqlite_path: impl Into<PathBuf>, warehouse: impl Into<String>) -> CatalogSpec {
        CatalogSpec::Sql {
            db: SqlDb::Sqlite(sqlite_path.into()),
            warehouse: warehouse.into(),
            s3: None,
        }
    }

    /// A SQL catalog in a PostgreSQL database (`postgres://...`).
    pub fn sql_postgres(url: impl Into<String>, warehouse: impl Into<String>) -> CatalogSpec {
        CatalogSpec::Sql {
            db: SqlDb::Postgres(url.into()),
            warehouse: warehouse.into(),
            s3: None,
        }
    }

    /// The same catalog with data on an S3 endpoint.
    pub fn with_s3(mut self, access: S3Access) -> CatalogSpec {
        match &mut self {
            CatalogSpec::Rest { s3, .. } | CatalogSpec::Sql { s3, .. } => *s3 = Some(access),
        }
        self
    }

    /// The S3 endpoint and keys, if any.
    pub fn s3(&self) -> Option<&S3Access> {
        match self {
            CatalogSpec::Rest { s3, .. } | CatalogSpec::Sql { s3, .. } => s3.as_ref(),
        }
    }

    /// The warehouse as a URI (`file:///abs/dir` or `s3://...`); `None` for REST (the server
    /// decides).
    pub fn warehouse_uri(&self) -> Option<String> {
        match self {
            CatalogSpec::Rest { .. } => None,
            CatalogSpec::Sql { warehouse, .. }
                if warehouse.contains("://") || warehouse.starts_with("file:") =>
            {
                Some(warehouse.clone())
            }
            CatalogSpec::Sql { warehouse, .. } => {
                let abs = std::path::absolute(warehouse).expect("absolute warehouse path");
                Some(format!("file://{}", path_str(&abs)))
            }
        }
    }

    /// The database URL for iceberg-catalog-sql / sqlx (SQL catalogs only): `sqlite://<abs
    /// path>` or the Postgres URL.
    pub fn sql_url(&self) -> Option<String> {
        match self {
            CatalogSpec::Sql {
                db: SqlDb::Sqlite(path),
                ..
            } => {
                let abs = std::path::absolute(path).expect("absolute sqlite path");
                Some(format!("sqlite://{}", path_str(&abs)))
            }
            CatalogSpec::Sql {
                db: SqlDb::Postgres(url),
                ..
            } => Some(url.clone()),
            CatalogSpec::Rest { .. } => None,
        }
    }

    /// Catalog/FileIO properties for iceberg-rust: the S3 ones ([`S3Access::iceberg_props`]) when
    /// an S3 endpoint is set, else none.
    pub fn iceberg_props(&self) -> BTreeMap<String, String> {
        self.s3().map(S3Access::iceberg_props).unwrap_or_default()
    }

    /// The `[catalog]` section of an icemaint config file for this catalog: `type`, `uri`
    /// ([`CatalogSpec::sql_url`] for SQL), `name = "default"` and `warehouse` for SQL, and
    /// [`CatalogSpec::iceberg_props`] as `[catalog.properties]`.
    pub fn config_toml(&self) -> String {
        let mut cat = toml::Table::new();
        match self {
            CatalogSpec::Rest { uri, token, .. } => {
                cat.insert("type".into(), "rest".into());
                cat.insert("uri".into(), uri.as_str().into());
                if let Some(t) = token {
                    let props = toml::Table::from_iter([("token".to_string(), t.as_str().into())]);
                    cat.insert("properties".into(), props.into());
                }
            }
            CatalogSpec::Sql { .. } => {
                cat.insert("type".into(), "sql".into());
                cat.insert("uri".into(), self.sql_url().unwrap().into());
                cat.insert("name".into(), "default".into());
                cat.insert("warehouse".into(), self.warehouse_uri().unwrap().into());
            }
        }
        let props: toml::Table = self
            .iceberg_props()
            .into_iter()
            .map(|(k, v)| (k, toml::Value::String(v)))
            .collect();
        if !props.is_empty() {
            let all = cat
                .entry("properties")
                .or_insert_with(|| toml::Table::new().into());
            all.as_table_mut().expect("properties").extend(props);
        }
        let mut root = toml::Table::new();
        root.insert("catalog".into(), toml::Value::Table(cat));
        toml::to_string(&root).expect("serialize catalog config")
    }

    /// The tools' catalog flags: `--catalog-uri`, `--warehouse`, and the S3 flags when set.
    pub fn args(&self) -> Vec<String> {
        let mut a = match self {
            CatalogSpec::Rest { uri, token, .. } => {
                let mut a = vec!["--catalog-uri".into(), uri.clone()];
                if let Some(t) = token {
                    a.extend(["--catalog-token".into(), t.clone()]);
                }
                a
            }
            CatalogSpec::Sql { db, warehouse, .. } => vec![
                "--catalog-uri".into(),
                match db {
                    SqlDb::Sqlite(path) => path_str(path).to_string(),
                    SqlDb::Postgres(url) => url.clone(),
                },
                "--warehouse".into(),
                warehouse.clone(),
            ],
        };
        if let Some(s3) = self.s3() {
            a.extend(s3.args());
        }
        a
    }
}

/// Runs `script` with `spec`'s catalog flags, `--table table`, then `extra`; returns its JSON.
/// Panics on a non-zero exit (see [`Peers::py`]).
pub fn tool(script: &str, spec: &CatalogSpec, table: &str, extra: &[&str]) -> Value {
    let mut args = spec.args();
    args.extend(["--table".to_string(), table.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Peers::py(script, &args)
}

/// `make_table.py`: creates the standard metrics table (schema `org_id int, metric_name string,
/// ts timestamptz, value double, resolution int`, partitioned by org and day unless `--partition
/// none`); `extra` e.g. `["--appends", "20", "--rows", "500"]`. Returns the tool's JSON (`rows`,
/// `data_files`, `snapshots`, `metadata_location`, ...).
pub fn make_table(spec: &CatalogSpec, table: &str, extra: &[&str]) -> Value {
    tool("make_table.py", spec, table, extra)
}

/// `table_info.py`: the table through PyIceberg (`format_version`, `properties`,
/// `current_snapshot_id`, `snapshots`, `data_files` with partitions, `delete_files`,
/// `metadata_location`, ...).
pub fn table_info(spec: &CatalogSpec, table: &str) -> Value {
    tool("table_info.py", spec, table, &[])
}

/// `pyiceberg_ops.py <op>`: a concurrent writer's commit: `op` is `append` (`--rows N --seed S
/// [--appends K] [--index I]`), `delete` (`--where FILTER`), `set-properties` (`K=V ...`) or
/// `remove-properties` (`K ...`).
pub fn pyiceberg_ops(spec: &CatalogSpec, table: &str, op: &str, extra: &[&str]) -> Value {
    let mut args = vec![op.to_string()];
    args.extend(spec.args());
    args.extend(["--table".to_string(), table.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Peers::py("pyiceberg_ops.py", &args)
}

/// Result of `verify.py`: what PyIceberg read, and whether all requested readers agree.
#[derive(Debug, Clone)]
pub struct Verify {
    /// Rows read by PyIceberg.
    pub rows: u64,
    /// PyIceberg's order-independent row checksum (16 hex digits).
    pub checksum: String,
    /// All readers returned the same rows and checksum, and none failed.
    pub agree: bool,
    /// Live data files of the current snapshot.
    pub data_files: u64,
    /// Live delete files of the current snapshot.
    pub delete_files: u64,
    /// Number of snapshots in the metadata.
    pub snapshots: u64,
    /// Current metadata file.
    pub metadata_location: String,
    /// verify.py's `files` object (counts, bytes, size min/median/max).
    pub files: Value,
    /// verify.py's exit status code (0 = agree, 1 = readers disagree).
    pub exit_code: i32,
    /// The whole JSON.
    pub raw: Value,
}

impl Verify {
    /// `(rows, checksum)` of one reader (`pyiceberg`, `duckdb`, `duckdb_rest_attach`, `spark`),
    /// `None` if it did not run or failed.
    pub fn reader(&self, name: &str) -> Option<(u64, String)> {
        let r = self.raw.get("readers")?.get(name)?;
        Some((
            r.get("rows")?.as_u64()?,
            r.get("checksum")?.as_str()?.to_string(),
        ))
    }
}

/// `verify.py` on `table`: PyIceberg always, plus DuckDB and/or Spark. Does not panic when the
/// readers disagree (check [`Verify::agree`]); panics on other failures.
pub fn verify(spec: &CatalogSpec, table: &str, duckdb: bool, spark: bool) -> Verify {
    let mut args = spec.args();
    args.extend(["--table".to_string(), table.to_string()]);
    if duckdb {
        args.push("--duckdb".into());
    }
    if spark {
        args.push("--spark".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = Peers::py_with_status("verify.py", &args);
    let code = out.status.code().unwrap_or(-1);
    let j = out.json;
    if !(code == 0 || code == 1) || j.get("readers").is_none() {
        panic!(
            "verify.py failed ({})\n--- stderr (tail) ---\n{}\n--- JSON ---\n{j}",
            out.status,
            tail(&out.stderr, 40)
        );
    }
    let py = &j["readers"]["pyiceberg"];
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    Verify {
        rows: u(&py["rows"]),
        checksum: py["checksum"].as_str().unwrap_or_default().to_string(),
        agree: j["agree"].as_bool().unwrap_or(false),
        data_files: u(&j["files"]["data_files"]),
        delete_files: u(&j["files"]["delete_files"]),
        snapshots: u(&j["snapshots"]),
        metadata_location: j["metadata_location"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        files: j["files"].clone(),
        exit_code: code,
        raw: j,
    }
}

/// Whether a process with this PID exists (for checks that servers are gone).
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

// ---------------------------------------------------------------------------------------------
// Self-tests of the pure helpers (no peers needed)
// ---------------------------------------------------------------------------------------------

#[test]
fn harness_parses_tool_output_and_server_logs() {
    let v = parse_json_object("{\n \"a\": 1\n}\n").unwrap();
    assert_eq!(v["a"], 1);
    let noisy = "warning: something\n{ not json\n{\n \"rows\": 3,\n \"x\": {\"y\": 2}\n}\n";
    assert_eq!(parse_json_object(noisy).unwrap()["rows"], 3);
    assert!(parse_json_object("no json here").is_none());
    assert!(parse_json_object("[1, 2]").is_none());

    let log = "INFO authentication is enabled\nINFO server is running at http://127.0.0.1:40123\n";
    assert_eq!(port_after(log, "server is running at"), Some(40123));
    assert_eq!(port_after(log, "listening on"), None);
    assert_eq!(
        port_after("Running on http://127.0.0.1:0", "Running on"),
        None
    );
    assert_eq!(tail("a\nb\nc", 2), "b\nc");
}

#[test]
fn harness_catalog_spec_flags_and_icemaint_config() {
    let s3 = S3Access {
        endpoint: "http://127.0.0.1:9000".into(),
        access_key: S3_ACCESS_KEY.into(),
        secret_key: S3_SECRET_KEY.into(),
        region: S3_REGION.into(),
    };
    let rest = CatalogSpec::rest("http://127.0.0.1:8181");
    assert_eq!(rest.args(), ["--catalog-uri", "http://127.0.0.1:8181"]);
    assert_eq!(rest.warehouse_uri(), None);
    let sql = CatalogSpec::sql("/tmp/x/catalog.db", "s3://lake/wh").with_s3(s3.clone());
    assert_eq!(
        sql.args(),
        [
            "--catalog-uri",
            "/tmp/x/catalog.db",
            "--warehouse",
            "s3://lake/wh",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
            "--s3-access-key",
            "AKIDTEST",
            "--s3-secret-key",
            "SECRETTEST",
            "--s3-region",
            "us-east-1",
        ]
    );
    assert_eq!(sql.sql_url().as_deref(), Some("sqlite:///tmp/x/catalog.db"));
    assert_eq!(
        CatalogSpec::sql("/a/c.db", "/a/wh")
            .warehouse_uri()
            .as_deref(),
        Some("file:///a/wh")
    );

    // The generated [catalog] section is a valid icemaint catalog configuration.
    #[derive(serde::Deserialize)]
    struct Root {
        catalog: icemaint::config::CatalogConfig,
    }
    let c = toml::from_str::<Root>(&sql.config_toml())
        .expect("valid [catalog]")
        .catalog;
    assert_eq!(c.kind, icemaint::config::CatalogType::Sql);
    assert_eq!(c.uri, "sqlite:///tmp/x/catalog.db");
    assert_eq!(
        (c.name.as_str(), c.warehouse.as_deref()),
        ("default", Some("s3://lake/wh"))
    );
    assert_eq!(c.properties, s3.iceberg_props());
    let c = toml::from_str::<Root>(&rest.config_toml())
        .expect("valid [catalog]")
        .catalog;
    assert_eq!(
        (c.kind, c.uri.as_str()),
        (icemaint::config::CatalogType::Rest, "http://127.0.0.1:8181")
    );
    assert!(c.properties.is_empty());
}
