//! The benchmark's smoke run (`bench/run.sh --smoke --with-peers --s3-latency-ms 20 --rounds 2`): the same
//! driver as the full benchmark on a 40-file input, so a change that breaks the benchmark (its
//! Spark recipe, `icemaint bench`, the other compactors, the S3 copy and latency proxy, the
//! report) fails the test suite rather than the next person who measures. Figures from a run
//! this small mean nothing; what is asserted is that every engine ran and produced the input's
//! rows. `--with-peers` installs iceberg-zamboni and iceberg-compaction from PyPI on first use.

use std::process::Command;

use crate::harness::{S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, TestDir};
use crate::ops_util::{repo_root, require_tool};

#[test]
fn bench_smoke_runs_every_engine_and_matches_the_input() {
    require_tool("time", "time");
    let dir = TestDir::new("bench-smoke");
    let out_json = dir.join("results.json");
    let out = Command::new(repo_root().join("bench/run.sh"))
        .arg("--smoke")
        .arg("--with-peers")
        .args(["--s3-latency-ms", "20"])
        .args(["--rounds", "2"])
        .arg("--work")
        .arg(dir.join("work"))
        .arg("--out")
        .arg(&out_json)
        .env("ICEMAINT_BIN", env!("CARGO_BIN_EXE_icemaint"))
        .output()
        .expect("run bench/run.sh");
    let log = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bench/run.sh --smoke failed\n{log}");

    let text = std::fs::read_to_string(&out_json).unwrap_or_else(|e| panic!("{e}\n{log}"));
    let r: serde_json::Value = serde_json::from_str(&text).expect("results JSON");
    assert_eq!(r["mode"], "smoke", "{r}");
    assert_eq!(r["checks_failed"], serde_json::json!([]), "{r}");

    // 2 appends x 20 files x 2000 rows, in 2 orgs x 2 days.
    let input = &r["input"];
    assert_eq!(input["files"], 40, "{r}");
    assert_eq!(input["rows"], 80_000, "{r}");
    let checksum = input["checksum"].as_str().expect("input checksum");
    for engine in ["spark", "icemaint"] {
        let o = &r["outputs"][engine];
        assert_eq!(o["rows"], 80_000, "{engine}: {r}");
        assert_eq!(o["checksum"], checksum, "{engine}: {r}");
        assert_eq!(o["agree"], true, "{engine}: readers disagree: {r}");
        // Binpack to 512 MiB leaves one file per partition.
        assert_eq!(o["data_files"], 4, "{engine}: {r}");
        assert_eq!(r[engine]["files_rewritten"], 40, "{engine}: {r}");
        assert!(r[engine]["cpu_s"].as_f64().unwrap() > 0.0, "{engine}: {r}");
        assert!(
            r[engine]["peak_rss_mib"].as_f64().unwrap() > 0.0,
            "{engine}: {r}"
        );
    }
    assert_eq!(r["icemaint"]["status"], "succeeded", "{r}");
    // The other compactors, judged by the table: every input file replaced, one per partition.
    for peer in ["zamboni", "iceberg-compaction"] {
        let o = &r["outputs"][peer];
        assert_eq!(o["rows"], 80_000, "{peer}: {r}");
        assert_eq!(o["checksum"], checksum, "{peer}: {r}");
        assert_eq!(o["agree"], true, "{peer}: readers disagree: {r}");
        assert_eq!(r[peer]["files_rewritten"], 40, "{peer}: {r}");
        assert_eq!(r[peer]["output_files"], 4, "{peer}: {r}");
    }
    // icemaint on S3, directly and behind the latency proxy: same rows, every file rewritten.
    for run in ["S3 (s3s-fs)", "S3 + 20 ms"] {
        let o = &r["s3"]["runs"][run];
        assert_eq!(o["status"], "succeeded", "{run}: {r}");
        assert_eq!(o["files_rewritten"], 40, "{run}: {r}");
        assert_eq!(o["checksum"], checksum, "{run}: {r}");
    }
    assert_eq!(r["limit"]["rows"], 80_000, "{r}");
    assert_eq!(r["limit"]["output_files"], 4, "{r}");
    // The second round: icemaint again from the input snapshot, and the loop again.
    for engine in ["icemaint_cpu_s", "loop_cpu_s"] {
        let cpu = r["rounds"][engine].as_array().expect("rounds");
        assert_eq!(cpu.len(), 2, "{engine}: {r}");
        assert!(
            cpu.iter().all(|c| c.as_f64().unwrap() > 0.0),
            "{engine}: {r}"
        );
    }
    // Planning alone: 2000 files over 100 partitions make one group per partition.
    assert_eq!(r["plan"]["files"], 2000, "{r}");
    assert_eq!(r["plan"]["groups"], 100, "{r}");

    // The Markdown report is what a person reads; it must carry the comparison table.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| CPU s (user+sys) |") && stdout.contains(checksum),
        "{log}"
    );
}

/// Runs `icemaint bench ARGS` and parses the JSON report it prints.
fn bench_json(args: &[&str], envs: &[(&str, &str)]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_icemaint"))
        .arg("bench")
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run icemaint bench");
    let log = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "icemaint bench {args:?} failed\n{log}"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{log}"))
}

/// Checks a `bench remove-orphans` report of 300 objects, 30 of them orphans.
fn assert_orphans_report(r: &serde_json::Value, storage: &str) {
    assert_eq!(r["storage"], storage, "{r}");
    assert_eq!(r["orphan_files_found"], 30, "{r}");
    assert_eq!(r["files_deleted"], 30, "{r}");
    // 270 data files and 30 orphans, plus the table's metadata files, manifest lists and
    // manifests (3 commits).
    let listed = r["files_listed"].as_u64().unwrap();
    assert!((309..=320).contains(&listed), "{r}");
    assert!(r["referenced_files"].as_u64().unwrap() >= 279, "{r}");
    assert!(r["peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
}

const ORPHANS_ARGS: [&str; 9] = [
    "remove-orphans",
    "--objects",
    "300",
    "--orphans",
    "30",
    "--partitions",
    "20",
    "--commits",
    "3",
];

/// `bench remove-orphans` at a tiny size on local disk: every planted orphan is found and deleted
/// (the child process checks that too) and every object is listed.
#[test]
fn bench_remove_orphans_smoke_local() {
    let dir = TestDir::new("bench-orphans-local");
    let r = bench_json(&ORPHANS_ARGS, &[]);
    assert_orphans_report(&r, "local");
    // With --dir the table is made (and left) where asked.
    let d = dir.join("t");
    let kept = [&ORPHANS_ARGS[..], &["--dir", d.to_str().unwrap()]].concat();
    assert_orphans_report(&bench_json(&kept, &[]), "local");
    assert!(d.join("catalog.db").exists());
}

/// The same against s3s-fs, the objects written into the directory it serves.
#[test]
fn bench_remove_orphans_smoke_s3() {
    let dir = TestDir::new("bench-orphans-s3");
    let s3 = S3Server::start_s3s(&dir.join("s3"));
    let endpoint = s3.endpoint();
    let data = dir.join("s3");
    let catalog = dir.join("catalog");
    let s3_args = [
        "--s3-endpoint",
        endpoint.as_str(),
        "--s3-data-dir",
        data.to_str().unwrap(),
        "--dir",
        catalog.to_str().unwrap(),
    ];
    let envs = [
        ("ICEMAINT_BENCH_S3_ACCESS_KEY", S3_ACCESS_KEY),
        ("ICEMAINT_BENCH_S3_SECRET_KEY", S3_SECRET_KEY),
    ];
    let r = bench_json(&[&ORPHANS_ARGS[..], &s3_args[..]].concat(), &envs);
    assert_orphans_report(&r, "s3");
}

/// `bench rewrite-manifests` at a tiny size: the commits' manifests are replaced by fewer.
#[test]
fn bench_rewrite_manifests_smoke() {
    let r = bench_json(
        &[
            "rewrite-manifests",
            "--entries",
            "500",
            "--partitions",
            "20",
            "--commits",
            "5",
        ],
        &[],
    );
    assert_eq!(r["entries"], 500, "{r}");
    assert_eq!(r["manifests_replaced"], 5, "{r}");
    assert_eq!(r["manifests_created"], 1, "{r}");
    assert!(r["peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
}

/// `bench expire` at a tiny size: every snapshot but the last expires and exactly the files only
/// they reached are deleted (the child process checks the files on disk too).
#[test]
fn bench_expire_smoke() {
    let r = bench_json(&["expire", "--snapshots", "25"], &[]);
    assert_eq!(r["snapshots"], 25, "{r}");
    assert_eq!(r["snapshots_expired"], 25, "{r}");
    assert_eq!(r["snapshots_after"], 1, "{r}");
    assert_eq!(r["data_files_deleted"], 24, "{r}");
    assert_eq!(r["manifests_deleted"], 24, "{r}");
    assert_eq!(r["manifest_lists_deleted"], 25, "{r}");
    assert!(r["files_deleted"].as_u64().unwrap() >= 73, "{r}");
    assert!(r["peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
}
