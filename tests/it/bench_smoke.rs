//! The benchmark's smoke run (`bench/run.sh --smoke`): the same driver as the full benchmark on a
//! 40-file input, so a change that breaks the benchmark (its Spark recipe, `icemaint bench`,
//! the report) fails the test suite rather than the next person who measures. Figures from a run
//! this small mean nothing; what is asserted is that every engine ran and produced the input's
//! rows.

use std::process::Command;

use crate::harness::TestDir;
use crate::ops_util::{repo_root, require_tool};

#[test]
fn bench_smoke_runs_every_engine_and_matches_the_input() {
    require_tool("time", "time");
    let dir = TestDir::new("bench-smoke");
    let out_json = dir.join("results.json");
    let out = Command::new(repo_root().join("bench/run.sh"))
        .arg("--smoke")
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
    assert_eq!(r["limit"]["rows"], 80_000, "{r}");
    assert_eq!(r["limit"]["output_files"], 4, "{r}");
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
