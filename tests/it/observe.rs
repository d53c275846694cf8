//! The observability files proven against the real thing: `promtool` checks the rules and runs
//! their unit tests (every alert has a firing and a non-firing case); every alert has a summary,
//! a description and a runbook link to an existing section; and a real Prometheus scraping a
//! real `icemaint demo` every second evaluates every rule and every dashboard query, each of
//! which must parse and name only metrics that icemaint's `/metrics` declares.
//!
//! Prometheus and promtool come from the Debian package `prometheus` (installed by
//! `scripts/ops-test-deps.sh`); without them these tests fail, they do not skip.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_yaml_ng::Value;

use crate::ops_util::{
    Daemon, KillOnDrop, encode, free_port, http, repo_file, repo_root, require_tool, wait_for,
};

const RULES: &str = "deploy/prometheus/rules.yml";
const RULES_TEST: &str = "deploy/prometheus/rules_test.yml";
const RUNBOOK: &str = "deploy/prometheus/RUNBOOK.md";
const DASHBOARD: &str = "deploy/grafana/icemaint.json";

fn rules() -> Value {
    serde_yaml_ng::from_str(&repo_file(RULES)).unwrap()
}

/// (name, expr) of every recording rule and alert.
fn rule_exprs() -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for g in rules()["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let (name, alert) = match (r.get("alert"), r.get("record")) {
                (Some(a), _) => (a.as_str().unwrap().to_string(), true),
                (_, Some(rec)) => (rec.as_str().unwrap().to_string(), false),
                _ => panic!("rule without alert or record: {r:?}"),
            };
            out.push((name, r["expr"].as_str().unwrap().to_string(), alert));
        }
    }
    out
}

/// Grafana's variables replaced by values Prometheus accepts.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("${table}", ".*")
        .replace("$table", ".*")
}

/// Every panel query of the dashboard (panel title, PromQL), and the template variables' metrics.
fn dashboard_queries() -> (Vec<(String, String)>, Vec<String>) {
    let d: serde_json::Value = serde_json::from_str(&repo_file(DASHBOARD)).unwrap();
    let mut queries = Vec::new();
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("every target has a PromQL expr");
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    expr.to_string(),
                ));
            }
            walk(&p["panels"], out);
        }
    }
    walk(&d["panels"], &mut queries);
    let mut variable_metrics = Vec::new();
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .unwrap_or_else(|| panic!("variable query {q} is not label_values(metric, label)"));
            variable_metrics.push(inner.trim().to_string());
        }
    }
    (queries, variable_metrics)
}

/// The metric names a PromQL expression reads. A small lexer, enough for the queries here: strings,
/// label matchers and ranges are dropped, an identifier followed by `(` is a function or an
/// aggregation, the parenthesised list after by/without/on/ignoring/group_* holds label names,
/// and numbers and durations start with a digit.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            '#' => {
                // A comment runs to the end of the line.
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            c => cleaned.push(c),
        }
    }
    let b = cleaned.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let next_non_space = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (c == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()) {
            while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == b'_' || c == b':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && ident(b[i]) {
            i += 1;
        }
        let word = &cleaned[start..i];
        let j = next_non_space(i);
        // `sum by (x) (...)`: an aggregation whose grouping comes before its argument.
        let grouping_follows = ["by", "without"].iter().any(|k| {
            cleaned[j..].starts_with(k) && cleaned[j + k.len()..].trim_start().starts_with('(')
        });
        let followed_by_paren = (j < b.len() && b[j] == b'(') || grouping_follows;
        match word {
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right" => {
                if followed_by_paren {
                    i = j + cleaned[j..].find(')').expect("closing )") + 1;
                }
            }
            "and" | "or" | "unless" | "bool" | "offset" | "inf" | "nan" | "Inf" | "NaN" => {}
            _ if followed_by_paren => {}
            _ => {
                names.insert(word.to_string());
            }
        }
    }
    names
}

#[test]
fn metric_name_lexer() {
    let n = metric_names(
        r#"sum by (table, le) (rate(icemaint_x_bucket{table=~"a.b"}[5m])) / on (table) group_left(kind) icemaint:y offset 6h > 6 * 3600 and absent(up{job="icemaint"}) # c x_y"#,
    );
    let want: BTreeSet<String> = ["icemaint_x_bucket", "icemaint:y", "up"]
        .map(String::from)
        .into();
    assert_eq!(n, want);
}

/// The metric families `/metrics` declares (`# TYPE` lines), with the series names of histograms.
fn declared_metrics(metrics_text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in metrics_text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            out.insert(name.to_string());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    out
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let promtool = require_tool("promtool", "prometheus");
    for args in [
        vec!["check", "rules", RULES],
        vec!["test", "rules", RULES_TEST],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(repo_root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// GitHub's heading anchors: lowercase, spaces to dashes, other punctuation dropped.
fn anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[test]
fn every_alert_is_documented_and_unit_tested_both_ways() {
    let runbook_anchors = anchors(&repo_file(RUNBOOK));
    let tests: Value = serde_yaml_ng::from_str(&repo_file(RULES_TEST)).unwrap();
    // alertname -> (has a firing case, has a non-firing case)
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for t in tests["tests"].as_sequence().unwrap() {
        for a in t
            .get("alert_rule_test")
            .and_then(|v| v.as_sequence())
            .into_iter()
            .flatten()
        {
            let name = a["alertname"].as_str().unwrap().to_string();
            let fires = a
                .get("exp_alerts")
                .and_then(|v| v.as_sequence())
                .is_some_and(|s| !s.is_empty());
            let e = cases.entry(name).or_default();
            if fires {
                e.0 = true;
            } else {
                e.1 = true;
            }
        }
    }
    let mut alerts = 0;
    for g in rules()["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let Some(name) = r.get("alert").and_then(|a| a.as_str()) else {
                continue;
            };
            alerts += 1;
            let ann = &r["annotations"];
            for key in ["summary", "description", "runbook_url"] {
                assert!(
                    ann.get(key)
                        .and_then(|v| v.as_str())
                        .is_some_and(|s| !s.trim().is_empty()),
                    "{name}: annotation {key} missing"
                );
            }
            assert!(
                r["labels"]["severity"].as_str().is_some(),
                "{name}: no severity label"
            );
            let url = ann["runbook_url"].as_str().unwrap();
            let (file, anchor) = url
                .split_once('#')
                .unwrap_or_else(|| panic!("{name}: runbook_url {url} has no anchor"));
            assert_eq!(file, RUNBOOK, "{name}: runbook_url");
            assert!(
                runbook_anchors.contains(anchor),
                "{name}: no section #{anchor} in {RUNBOOK} (sections: {runbook_anchors:?})"
            );
            assert_eq!(
                cases.get(name),
                Some(&(true, true)),
                "{name}: rules_test.yml needs a case where it fires and one where it does not"
            );
        }
    }
    assert!(alerts >= 6, "{alerts} alerts");
    let alert_names: BTreeSet<String> = rule_exprs()
        .into_iter()
        .filter(|r| r.2)
        .map(|r| r.0)
        .collect();
    for name in cases.keys() {
        assert!(
            alert_names.contains(name.as_str()),
            "rules_test.yml tests unknown alert {name}"
        );
    }
}

/// A Prometheus server on a free loopback port, scraping `target` every second with `rules`.
struct Prometheus {
    addr: String,
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let bin = require_tool("prometheus", "prometheus");
        let dir = tempfile::Builder::new()
            .prefix("icemaint-prom-")
            .tempdir()
            .unwrap();
        std::fs::copy(repo_root().join(RULES), dir.path().join("rules.yml")).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - rules.yml\n\
             scrape_configs:\n  - job_name: icemaint\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            addr,
            _child: KillOnDrop(child),
            _dir: dir,
        };
        wait_for(Duration::from_secs(60), "prometheus to be ready", || {
            http(&p.addr, "GET", "/-/ready", &[])
                .ok()
                .filter(|r| r.status == 200)
        });
        p
    }

    /// `/api/v1/query` at the current time: the JSON answer, whatever its status.
    fn query(&self, promql: &str) -> serde_json::Value {
        let r = http(
            &self.addr,
            "GET",
            &format!("/api/v1/query?query={}", encode(promql)),
            &[],
        )
        .expect("query prometheus");
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

#[test]
fn rules_and_dashboard_queries_evaluate_against_a_real_prometheus_scraping_icemaint() {
    let d = Daemon::demo();
    let prom = Prometheus::start(&d.addr);

    // A successful scrape of icemaint, with the demo tables' gauges in it.
    wait_for(
        Duration::from_secs(60),
        "a successful scrape of icemaint",
        || {
            let r = prom.query("up{job=\"icemaint\"} == 1 and on (instance) icemaint_build_info");
            (r["data"]["result"].as_array()?.len() == 1).then_some(())
        },
    );
    let tables = prom.query("icemaint_table_small_files");
    assert_eq!(
        tables["data"]["result"].as_array().map(Vec::len),
        Some(2),
        "{tables}"
    );

    let metrics_text = d.get("/metrics").unwrap().body;
    let declared = declared_metrics(&metrics_text);
    let rules = rule_exprs();
    let recorded: BTreeSet<String> = rules.iter().filter(|r| !r.2).map(|r| r.0.clone()).collect();

    let (panels, variable_metrics) = dashboard_queries();
    assert!(panels.len() >= 20, "{} panel queries", panels.len());
    let mut all: Vec<(String, String)> = rules
        .iter()
        .map(|(name, expr, _)| (format!("rule {name}"), expr.clone()))
        .collect();
    all.extend(
        panels
            .into_iter()
            .map(|(title, expr)| (format!("panel {title:?}"), grafana_to_promql(&expr))),
    );
    let mut problems = Vec::new();
    for (what, expr) in &all {
        let r = prom.query(expr);
        if r["status"] != "success" {
            problems.push(format!("{what}: {expr}\n  -> {}", r["error"]));
        }
        let names = metric_names(expr);
        if names.is_empty() {
            problems.push(format!("{what}: no metric found in {expr}"));
        }
        for n in names {
            let known = declared.contains(&n)
                || recorded.contains(&n)
                // Prometheus' own series for the scrape job.
                || n == "up";
            if !known {
                problems.push(format!("{what}: metric {n} is not exported by icemaint"));
            }
            if n.starts_with("icemaint_") && !declared.contains(&n) {
                problems.push(format!("{what}: {n} not declared in /metrics"));
            }
        }
    }
    for m in variable_metrics {
        if !declared.contains(&m) {
            problems.push(format!(
                "dashboard variable: metric {m} is not exported by icemaint"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Prometheus itself evaluated every rule without an error.
    let groups = wait_for(Duration::from_secs(30), "every rule evaluated", || {
        let r = http(&prom.addr, "GET", "/api/v1/rules", &[]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        let groups = v["data"]["groups"].as_array()?.clone();
        let all_evaluated = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .all(|r| r["health"] != "unknown");
        all_evaluated.then_some(groups)
    });
    let mut count = 0;
    for g in &groups {
        for r in g["rules"].as_array().unwrap() {
            count += 1;
            assert_eq!(
                r["health"],
                "ok",
                "rule {} failed: {}\n{}",
                r["name"],
                r["lastError"],
                prom.log()
            );
        }
    }
    assert_eq!(count, rules.len(), "Prometheus loaded every rule");
    // icemaint is up, so the daemon-down alert clears (it may be pending from an evaluation
    // that ran before the first scrape).
    wait_for(Duration::from_secs(30), "IcemaintDown to clear", || {
        let alerts = prom.query("ALERTS{alertname=\"IcemaintDown\"}");
        (alerts["data"]["result"] == serde_json::json!([])).then_some(())
    });
}
