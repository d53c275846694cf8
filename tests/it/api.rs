//! The HTTP API on the real daemon: the served OpenAPI document is the one the library generates
//! and every operation it documents answers with a documented status; the bearer token guards the
//! mutating routes and nothing else; and schemathesis, fuzzing the API from that document, finds
//! no server error and no response that breaks the schema.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ops_util::{Daemon, encode};

const TOKEN: &str = "s3cret-token";

/// Every documented operation, with its path parameters filled from the demo, answers with a
/// status its documentation lists (so no documented route falls through to the 404 fallback or
/// a 405), and the served document is the one `icemaint::server::openapi` generates.
#[test]
fn served_openapi_document_matches_the_running_router() {
    let d = Daemon::demo();
    let served = d.get("/api/v1/openapi.json").unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    let doc = icemaint::server::openapi::document();
    assert_eq!(served.json(), doc);

    let job_id = d.get("/api/v1/jobs?limit=1").unwrap().json()["jobs"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ops = icemaint::server::openapi::documented_operations(&doc);
    assert!(ops.len() >= 10, "{ops:?}");
    for (method, path) in ops {
        let target = path
            .replace("{table}", "metrics.rollups_1m")
            .replace("{id}", &job_id);
        let r = d.request(&method, &target, &[]).unwrap();
        let responses = &doc["paths"][&path][method.to_ascii_lowercase()]["responses"];
        assert!(
            responses.get(r.status.to_string()).is_some(),
            "{method} {target}: undocumented status {} ({})",
            r.status,
            r.body
        );
        if method == "GET" {
            assert_eq!(r.status, 200, "{method} {target}: {}", r.body);
        }
    }
}

/// Errors are JSON even where axum would answer in plain text (path bytes that are not UTF-8).
#[test]
fn bad_path_parameters_get_json_errors() {
    let d = Daemon::demo();
    for target in [
        "/api/v1/jobs/%FF",
        "/api/v1/tables/%FF.t",
        "/api/v1/tables/a..b",
        "/api/v1/jobs/not-a-uuid",
        &format!("/api/v1/jobs?table={}", encode("no-dot")),
        "/api/v1/jobs?limit=0",
        "/api/v1/jobs?bogus=1",
    ] {
        let r = d.get(target).unwrap();
        assert_eq!(r.status, 400, "{target}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{target}: {}", r.body);
    }
    let r = d.get("/no/such/endpoint").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no such endpoint");
}

/// With `[server] token` set (here through `ICEMAINT__SERVER__TOKEN`, as the Kubernetes Secret
/// does), mutating routes answer 401 JSON without the right bearer token and work with it; reads
/// stay open.
#[test]
fn token_guards_mutating_routes_only() {
    let d = Daemon::serve_demo_config(&[("ICEMAINT__SERVER__TOKEN", TOKEN)]);
    let bearer = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");
    for target in [
        "/api/v1/reload",
        "/api/v1/tables/metrics.rollups_1m/reconcile",
    ] {
        for headers in [
            vec![],
            vec![("Authorization", wrong.as_str())],
            vec![("Authorization", TOKEN)],
            vec![("Authorization", "Basic czNjcmV0LXRva2Vu")],
        ] {
            let r = d.request("POST", target, &headers).unwrap();
            assert_eq!(r.status, 401, "POST {target} {headers:?}: {}", r.body);
            assert!(
                r.header("content-type")
                    .unwrap()
                    .starts_with("application/json")
            );
            assert_eq!(r.json()["error"], "missing or invalid bearer token");
        }
    }
    let r = d
        .request("POST", "/api/v1/reload", &[("Authorization", &bearer)])
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["policies"], 2);
    let r = d
        .request(
            "POST",
            "/api/v1/tables/metrics.rollups_1m/reconcile",
            &[("Authorization", &bearer)],
        )
        .unwrap();
    assert!(matches!(r.status, 202 | 409), "{}", r.body);

    for target in [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/tables",
        "/api/v1/tables/metrics.rollups_1m",
        "/api/v1/jobs",
    ] {
        assert_eq!(
            d.get(target).unwrap().status,
            200,
            "GET {target} without a token"
        );
    }
}

/// The schemathesis executable in the venv that `scripts/ops-test-deps.sh` installs:
/// `$ICEMAINT_SCHEMATHESIS_VENV`, by default `$HOME/.cache/icemaint-schemathesis/venv`.
fn schemathesis() -> std::path::PathBuf {
    let venv = std::env::var_os("ICEMAINT_SCHEMATHESIS_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            std::path::PathBuf::from(home).join(".cache/icemaint-schemathesis/venv")
        });
    let path = venv.join("bin/schemathesis");
    assert!(
        path.is_file(),
        "schemathesis not found at {}: run scripts/ops-test-deps.sh, which installs it",
        path.display()
    );
    path
}

/// schemathesis against the running daemon and its served document, every check, with the API
/// token (the token test above covers requests without it). Bounded by work: a fixed number of
/// examples per operation, one worker; loopback only. The only clock is a generous safety kill
/// for a hung run, so a slow, busy machine still passes when every check does.
#[test]
fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let st = schemathesis();
    let d = Daemon::serve_demo_config(&[("ICEMAINT__SERVER__TOKEN", TOKEN)]);
    let base = format!("http://{}", d.addr);
    let log_path = d.path().join("schemathesis.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let start = Instant::now();
    let mut child = Command::new(&st)
        .args([
            "run",
            &format!("{base}/api/v1/openapi.json"),
            "--url",
            &base,
        ])
        .args(["--checks", "all", "--max-examples", "25", "--workers", "1"])
        // Compaction options have cross-field rules (min < target < max, a parsable `where`, an
        // existing spec id) that a schema cannot state: a schema-valid body may rightly get a
        // 400, which this check would call a failure. Every other check stays on.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--no-color", "--request-timeout", "20"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        // Hypothesis keeps its example database in the working directory: keep it out of the
        // repository.
        .current_dir(d.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run schemathesis");
    // --max-time would make schemathesis fuzz for the whole budget; the example count bounds the
    // run instead (about 10 s on an idle machine). The safety kill only ends a run that hangs.
    const SAFETY_KILL: Duration = Duration::from_secs(15 * 60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > SAFETY_KILL {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis hung: still running after {} s:\n{}",
                SAFETY_KILL.as_secs(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    eprintln!("schemathesis took {:.1} s", start.elapsed().as_secs_f64());
    assert!(status.success(), "schemathesis found problems:\n{text}");
    // A clean run ends "No issues found", or with warnings only (e.g. that generated bodies of
    // an operation with cross-field rules were mostly rejected, which depends on the seed); a
    // failed check would list failed test cases.
    let cases = text
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_default();
    assert!(
        text.contains("No issues found") || (cases.contains(" passed") && !cases.contains("fail")),
        "{text}"
    );
    assert!(
        !text.contains("Tested: 0"),
        "schemathesis tested no operation:\n{text}"
    );
}
