//! Health triggers and the budget across tables, with the real daemon on a SQL catalog and a
//! PyIceberg writer: a trigger (no schedule) compacts a table once a writer added enough small
//! files, records why in the job and the metrics, and then cools down; with more tables due than
//! the budget allows, the most valuable compacts first and the rest wait, visibly queued.

use serde_json::Value;

use crate::daemon::{Daemon, icemaint, write_config};
use crate::harness::{CatalogSpec, TestDir, make_table, pyiceberg_ops, verify};

/// Compaction on conditions only: 8 small files, at most once an hour per table. The reconcile
/// schedule never fires during a test (the start-up reconciliation still runs).
const POLICY: &str = r#"version = 1
name = "triggered"
tables = ["metrics.*"]

[reconcile]
schedule = "0 0 0 1 1 *"

[compaction]

[compaction.trigger]
small-file-count = 8
min-interval = "1h"
"#;

fn policies(dir: &TestDir) -> std::path::PathBuf {
    let p = dir.join("policies");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("triggered.toml"), POLICY).unwrap();
    p
}

fn jobs(v: &Value) -> Vec<Value> {
    v["jobs"].as_array().cloned().unwrap_or_default()
}

/// The status page's row of `table` in the compaction section (empty when absent).
fn watch_row(page: &Value, table: &str) -> String {
    let html = page.as_str().unwrap_or_default();
    let Some(section) = html.split("<table id=\"watch\">").nth(1) else {
        return String::new();
    };
    let section = section.split("</table>").next().unwrap_or_default();
    section
        .split("<tr>")
        .find(|r| r.starts_with(&format!("<td>{table}</td>")))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_trigger_compacts_after_a_writer_adds_small_files_then_cools_down() {
    let dir = TestDir::new("trigger");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    let t = "metrics.events";
    let rows = ["--rows", "50"];
    make_table(
        &spec,
        t,
        &[&rows[..], &["--partition", "none", "--appends", "3"]].concat(),
    );
    let config = write_config(&dir, &spec, &policies(&dir), "");
    let d = Daemon::start(&config, &[]);

    // Three small files: evaluated, nothing met, nothing runs.
    d.wait_for("/", "the trigger evaluated", |s, v| {
        s == 200 && watch_row(v, t).contains("no trigger met")
    })
    .await;
    assert!(jobs(&d.get("/api/v1/jobs?kind=compaction").await.1).is_empty());

    // The writer adds six more: nine small files, the trigger holds.
    pyiceberg_ops(
        &spec,
        t,
        "append",
        &[&rows[..], &["--appends", "6", "--index", "3"]].concat(),
    );
    // Read while the daemon may already compact: the rows are the same either way.
    let before = verify(&spec, t, false, false);
    assert_eq!(before.rows, 9 * 50);
    assert!([9, 1].contains(&before.data_files), "{}", before.raw);
    let done = d
        .wait_for(
            "/api/v1/jobs?kind=compaction",
            "the triggered compaction",
            |s, v| s == 200 && jobs(v).iter().any(|j| j["status"] == "succeeded"),
        )
        .await;
    let all = jobs(&done);
    assert_eq!(all.len(), 1, "{done}");
    let job = &all[0];
    assert_eq!(job["trigger"], "condition", "{job}");
    assert_eq!(job["reason"], "trigger:small-files", "{job}");
    assert!(job["fire_ms"].is_i64(), "{job}");
    let (s, detail) = d
        .get(&format!("/api/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!((s, &detail["reason"]), (200, &job["reason"]), "{detail}");
    let (_, metrics) = d.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(
            "icemaint_job_starts_total{kind=\"compaction\",reason=\"trigger:small-files\"} 1"
        ),
        "{metrics}"
    );
    let after = verify(&spec, t, true, false);
    assert!(after.agree, "{}", after.raw);
    assert_eq!(
        (after.rows, &after.checksum),
        (before.rows, &before.checksum)
    );
    assert_eq!(after.data_files, 1);

    // Eight more small files: the trigger holds again, but within min-interval it waits.
    pyiceberg_ops(
        &spec,
        t,
        "append",
        &[&rows[..], &["--appends", "8", "--index", "9"]].concat(),
    );
    // (The page may show the cooldown mid-append first; the last refresh sees all nine.)
    let page = d
        .wait_for("/", "the cooldown", |s, v| {
            let row = watch_row(v, t);
            s == 200 && row.contains("cooling-down") && row.contains(": 9 small files")
        })
        .await;
    let row = watch_row(&page, t);
    assert!(
        row.contains("trigger:small-files: 9 small files &gt;= 8; min-interval until"),
        "{row}"
    );
    assert!(!row.contains("never"), "last compacted is shown: {row}");
    let again = d.get("/api/v1/jobs?kind=compaction").await.1;
    assert_eq!(jobs(&again).len(), 1, "no second compaction: {again}");
    assert_eq!(d.stop(), 0);
}

#[tokio::test]
async fn the_budget_starts_the_most_valuable_first_and_queues_the_rest() {
    let dir = TestDir::new("budget");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    // Eight small files each; smaller files remove as many files for fewer bytes rewritten.
    let tables = [
        ("metrics.a_tiny", "20"),
        ("metrics.b_large", "6000"),
        ("metrics.c_mid", "400"),
    ];
    for (t, rows) in tables {
        make_table(
            &spec,
            t,
            &["--partition", "none", "--appends", "8", "--rows", rows],
        );
    }
    let config = write_config(&dir, &spec, &policies(&dir), "");
    let (code, out, err) = icemaint(&["tables", "--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let statuses: Vec<Value> = serde_json::from_str(&out).unwrap();
    let bytes = |t: &str| {
        statuses.iter().find(|s| s["table"] == t).unwrap()["small_file_bytes"]
            .as_u64()
            .unwrap()
    };
    let (a, b, c) = (
        bytes("metrics.a_tiny"),
        bytes("metrics.b_large"),
        bytes("metrics.c_mid"),
    );
    assert!(a < c && c < b / 4, "sizes {a} {c} {b}");
    // The hour's budget fits the tiny and the mid table, not the large one as well.
    let max_bytes = (a + c + b / 2).to_string();
    let d = Daemon::start(
        &config,
        &[
            ("ICEMAINT__SERVER__MAX_CONCURRENT_JOBS", "1"),
            ("ICEMAINT__SERVER__MAX_REWRITTEN_BYTES_PER_HOUR", &max_bytes),
        ],
    );
    let listed = d
        .wait_for(
            "/api/v1/jobs?kind=compaction",
            "two compactions and one queued",
            |s, v| {
                let j = jobs(v);
                s == 200
                    && j.iter().filter(|j| j["status"] == "succeeded").count() == 2
                    && j.iter().any(|j| {
                        j["status"] == "queued"
                            && j["detail"]["waiting_for"] == "budget: max-rewritten-bytes-per-hour"
                    })
            },
        )
        .await;
    let all = jobs(&listed);
    let mut ran: Vec<&Value> = all.iter().filter(|j| j["status"] == "succeeded").collect();
    ran.sort_by_key(|j| j["created_ms"].as_i64());
    let order: Vec<&str> = ran.iter().map(|j| j["table"].as_str().unwrap()).collect();
    assert_eq!(order, ["metrics.a_tiny", "metrics.c_mid"], "{listed}");
    // One at a time: the second started after the first finished.
    assert!(
        ran[1]["started_ms"].as_i64() >= ran[0]["finished_ms"].as_i64(),
        "{listed}"
    );
    let queued: Vec<&Value> = all.iter().filter(|j| j["status"] == "queued").collect();
    assert_eq!(queued.len(), 1, "{listed}");
    let q = queued[0];
    assert_eq!(q["table"], "metrics.b_large", "{q}");
    assert_eq!(q["reason"], "trigger:small-files", "{q}");
    assert_eq!(q["started_ms"], Value::Null, "{q}");
    assert_eq!(
        q["detail"]["waiting_for"], "budget: max-rewritten-bytes-per-hour",
        "{q}"
    );
    let (s, same) = d
        .get(&format!("/api/v1/jobs/{}", q["id"].as_str().unwrap()))
        .await;
    assert_eq!((s, &same["status"]), (200, &q["status"]), "{same}");

    let (_, metrics) = d.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    for line in ["icemaint_due_tables 1", "icemaint_queued_jobs 1"] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    let page = d
        .wait_for("/", "the queued table on the status page", |s, v| {
            s == 200 && watch_row(v, "metrics.b_large").contains("queued")
        })
        .await;
    assert!(
        watch_row(&page, "metrics.b_large")
            .contains("waits for the budget (max-rewritten-bytes-per-hour)"),
        "{}",
        watch_row(&page, "metrics.b_large")
    );
    assert_eq!(d.stop(), 0);
}
