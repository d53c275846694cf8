//! A REST catalog on S3 that vends per-table credentials, as production catalogs (Polaris,
//! Lakekeeper, Glue's REST endpoint) do: `vended_rest_catalog.py` over s3s-fs, which checks every
//! request's signature. icemaint's config names the catalog's uri and a token (or an OAuth2
//! credential) and no S3 setting at all, so every file it reads, writes, lists or deletes goes
//! through the S3 settings LoadTable's `config` gave for that table. On one PyIceberg table it
//! rewrites manifests, compacts, expires snapshots and removes an orphan; PyIceberg and DuckDB
//! (through the catalog and from the metadata file) read the same rows after each step. The
//! catalog refuses requests without the token, and the vended secret never shows in icemaint's
//! output, even at debug level.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::harness::{
    CatalogSpec, S3Server, TestDir, VendedRestCatalog, Verify, make_table, path_str, table_info,
    verify,
};

const T: &str = "db.events";

/// `icemaint <args> --config C --json` with `RUST_LOG=debug`: (exit code, JSON, all output).
fn icemaint_debug(config: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_icemaint"))
        .args(args)
        .args(["--config", path_str(config), "--json"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stdout + &stderr)
}

/// Writes an icemaint config whose `[catalog]` has the uri and `auth` (`token = ...` or
/// `credential = ...`) only.
fn config(dir: &TestDir, name: &str, uri: &str, auth: &str) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("vended.toml"),
        "version = 1\nname = \"vended\"\ntables = [\"db.*\"]\n",
    )
    .unwrap();
    let text = format!(
        "[catalog]\ntype = \"rest\"\nuri = \"{uri}\"\n\n[catalog.properties]\n{auth}\n\n\
         [store]\nurl = \"sqlite://{}\"\n\n[policies]\ndir = \"{}\"\n",
        dir.join("state.db").display(),
        policies.display()
    );
    assert!(!text.contains("s3."), "no S3 settings for icemaint: {text}");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The status line of a bare `GET path` without credentials.
fn unauthenticated_status(uri: &str, path: &str) -> String {
    let host = uri.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

/// Runs an icemaint job; asserts exit 0, status `succeeded`, and no vended secret in the output.
fn job(config: &Path, args: &[&str]) -> Value {
    let (code, json, output) = icemaint_debug(config, args);
    assert_eq!(code, 0, "icemaint {args:?}:\n{output}");
    assert_eq!(json["status"], "succeeded", "icemaint {args:?}: {json}");
    for secret in [crate::harness::S3_SECRET_KEY, VendedRestCatalog::TOKEN] {
        assert!(
            !output.contains(secret),
            "icemaint {args:?} printed a secret:\n{output}"
        );
    }
    json
}

/// PyIceberg and DuckDB (catalog and metadata file) read `want`'s rows.
fn same_rows(spec: &CatalogSpec, want: &Verify, step: &str) {
    let v = verify(spec, T, true, false);
    assert!(v.agree, "{step}: readers disagree: {}", v.raw);
    assert_eq!((v.rows, &v.checksum), (want.rows, &want.checksum), "{step}");
}

fn data_paths(info: &Value) -> BTreeSet<String> {
    info["data_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rest_catalog_on_s3_with_vended_credentials() {
    let started = Instant::now();
    let dir = TestDir::new("vended");
    let s3 = S3Server::start_s3s(&dir.join("s3"));
    std::fs::create_dir_all(dir.join("s3/lake")).unwrap();
    let catalog = VendedRestCatalog::start(&s3.access());
    let uri = catalog.uri();
    let local = |p: &str| {
        s3.data_dir()
            .unwrap()
            .join(p.strip_prefix("s3://").unwrap())
    };

    // Without the token the catalog answers nothing.
    for path in ["/v1/config", "/v1/namespaces/db/tables/events"] {
        let status = unauthenticated_status(&uri, path);
        assert!(status.contains(" 401 "), "{path}: {status}");
    }
    let wrong = config(&dir, "wrong.toml", &uri, "token = \"not-the-token\"");
    let (code, _, output) = icemaint_debug(&wrong, &["compact", T]);
    assert_ne!(code, 0, "a wrong token must fail:\n{output}");

    let spec = catalog.tools_spec();
    make_table(
        &spec,
        T,
        &["--partition", "none", "--appends", "6", "--rows", "200"],
    );
    let want = verify(&spec, T, true, false);
    assert!(want.agree, "{}", want.raw);
    let before = table_info(&spec, T);
    assert!(
        before["location"]
            .as_str()
            .unwrap()
            .starts_with("s3://lake/")
    );

    let cfg = config(
        &dir,
        "token.toml",
        &uri,
        &format!("token = \"{}\"", VendedRestCatalog::TOKEN),
    );
    // Six appends, six manifests: rewritten into one.
    job(&cfg, &["rewrite-manifests", T]);
    same_rows(&spec, &want, "rewrite-manifests");
    let out = job(&cfg, &["compact", T, "--option", "min-input-files=2"]);
    assert_eq!(
        (
            &out["result"]["files_read"],
            &out["result"]["files_written"]
        ),
        (&Value::from(6), &Value::from(1)),
        "{out}"
    );
    same_rows(&spec, &want, "compact");

    // Expiry deletes the six replaced files from S3, with the vended credentials.
    let out = job(
        &cfg,
        &["expire", T, "--older-than", "0s", "--retain-last", "1"],
    );
    assert_eq!(out["detail"]["deleted"]["data"]["files"], 6, "{out}");
    assert_eq!(out["detail"]["delete_failures"], 0, "{out}");
    let live = data_paths(&table_info(&spec, T));
    assert_eq!(live.len(), 1);
    for p in data_paths(&before) {
        assert!(!local(&p).exists(), "replaced {p} still in S3");
    }
    same_rows(&spec, &want, "expire");

    // Orphan removal lists and deletes through the vended credentials too; here icemaint logs in
    // with an OAuth2 client credential instead of a token.
    let cfg = config(
        &dir,
        "credential.toml",
        &uri,
        &format!("credential = \"{}\"", VendedRestCatalog::CREDENTIAL),
    );
    let tdir = local(before["location"].as_str().unwrap());
    let (old, young) = (
        tdir.join("data/junk-old.parquet"),
        tdir.join("data/junk-young.parquet"),
    );
    for p in [&old, &young] {
        std::fs::write(p, b"not referenced\n").unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(10 * 86_400))
        .unwrap();
    let out = job(&cfg, &["remove-orphans", T]);
    assert_eq!(out["detail"]["files_deleted"], 1, "{out}");
    assert!(!old.exists() && young.exists(), "{out}");
    for p in &live {
        assert!(local(p).exists(), "live {p} deleted");
    }
    same_rows(&spec, &want, "remove-orphans");

    // icemaint exchanged the credential for the token.
    let log = catalog.log();
    assert!(log.contains("/v1/oauth/tokens 200"), "{log}");
    eprintln!(
        "[vended] finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
