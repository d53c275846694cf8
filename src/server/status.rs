//! `GET /`: a small read-only status page, rendered on the server as plain HTML (no scripts, no
//! build step), so an operator with only a browser and a port-forward can see what the daemon
//! sees: readiness, watched tables with their policy, file counts, sizes, drift and file-size
//! histogram, whether each table is due for a compaction and why (not), and the last jobs with
//! their outcome (queued ones first).
//!
//! Everything comes from the same places as the JSON API (the cached table status and the state
//! store), so the page never touches the catalog and stays cheap to load.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::catalog::stats::{SIZE_BUCKET_UPPER_BYTES, SIZE_BUCKETS};
use crate::daemon::{Context, Watch};
use crate::inspect::TableStatus;
use crate::store::JobRecord;
use crate::util::human_bytes;

/// How many jobs the page lists.
const LAST_JOBS: i64 = 25;

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Labels of the size buckets: "< 1 MiB", ..., "≥ 512 MiB".
pub fn bucket_labels() -> [String; SIZE_BUCKETS] {
    std::array::from_fn(|i| match SIZE_BUCKET_UPPER_BYTES.get(i) {
        Some(upper) => format!("< {}", human_size(*upper)),
        None => format!(
            "\u{2265} {}",
            human_size(SIZE_BUCKET_UPPER_BYTES[SIZE_BUCKETS - 2])
        ),
    })
}

/// Whole-MiB bounds read better as "8 MiB" than "8.0MiB".
fn human_size(b: u64) -> String {
    format!("{} MiB", b / (1024 * 1024))
}

fn time_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "?".to_string())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2733;background:#fafbfc}\
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}\
table{border-collapse:collapse;background:#fff;font-size:.85rem}\
th,td{border:1px solid #d6dbe1;padding:.3rem .55rem;text-align:left;vertical-align:top}\
th{background:#eef1f4}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#17753a;font-weight:600}.bad{color:#b3261e;font-weight:600}.warn{color:#9a6400;font-weight:600}\
.muted{color:#69737d}.hist{display:grid;grid-template-columns:5.5rem 12rem 3rem;gap:1px .4rem;\
font-size:.75rem;align-items:center}.bar{display:block;background:#3b7dd8;height:.7rem}\
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{background:#fff;border:1px solid #d6dbe1;\
padding:.6rem .8rem;min-width:17rem}.card h3{font-size:.9rem;margin:0 0 .4rem}";

/// The page.
pub async fn page(State(ctx): State<Arc<Context>>) -> Response {
    let tables = ctx.cached_tables();
    // The page still renders when the store is down; the jobs section then says why it is empty.
    let jobs = ctx.store.jobs(None, None, LAST_JOBS).await.map(|stored| {
        let mut all: Vec<JobRecord> = ctx.queued_jobs().into_iter().rev().collect();
        all.extend(stored);
        all
    });
    let html = render(&ctx, &tables, jobs.as_deref().map_err(|e| e.to_string()));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// Renders the whole document (pure, so it can be tested without a server).
pub fn render(ctx: &Context, tables: &[TableStatus], jobs: Result<&[JobRecord], String>) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"30\">\
         <title>icemaint status</title><style>{STYLE}</style></head><body>\
         <h1>icemaint {}</h1>",
        escape(env!("CARGO_PKG_VERSION"))
    );
    readiness_section(&mut h, ctx, tables.len());
    h.push_str("<h2>Watched tables</h2>");
    if tables.is_empty() {
        h.push_str("<p class=\"muted\">No watched tables yet: no catalog table matches a policy, or the first refresh has not finished.</p>");
    } else {
        tables_section(&mut h, tables);
        h.push_str("<h2>Compaction</h2>");
        watch_section(&mut h, &ctx.watch());
        histograms_section(&mut h, tables);
    }
    h.push_str("<h2>Last jobs</h2>");
    jobs_section(&mut h, jobs);
    h.push_str(
        "<p class=\"muted\">Read-only. JSON: <a href=\"/api/v1/tables\">/api/v1/tables</a>, \
         <a href=\"/api/v1/jobs\">/api/v1/jobs</a>, <a href=\"/api/v1/openapi.json\">OpenAPI</a>, \
         <a href=\"/metrics\">/metrics</a>.</p></body></html>",
    );
    h
}

/// Catalog and store up or down, the policies in force, and why the daemon is not ready.
fn readiness_section(h: &mut String, ctx: &Context, watched: usize) {
    let ready = ctx.readiness();
    let policies = ctx.policies();
    let flag = |ok: bool| {
        if ok {
            "<span class=\"ok\">up</span>"
        } else {
            "<span class=\"bad\">down</span>"
        }
    };
    let names: Vec<&str> = policies.policies.iter().map(|p| p.name.as_str()).collect();
    let _ = write!(
        h,
        "<p>catalog {} &middot; state store {} &middot; {} watched tables &middot; {} policies ({})",
        flag(ready.catalog),
        flag(ready.store),
        watched,
        names.len(),
        escape(&names.join(", "))
    );
    if ready.checked_ms > 0 {
        let _ = write!(
            h,
            " &middot; <span class=\"muted\">checked {}</span>",
            time_ms(ready.checked_ms)
        );
    }
    h.push_str("</p>");
    if let Some(reason) = &ready.reason {
        let _ = write!(h, "<p class=\"bad\">{}</p>", escape(reason));
    }
}

/// One row per watched table: policy, format, file counts and sizes, property drift.
fn tables_section(h: &mut String, tables: &[TableStatus]) {
    h.push_str(
        "<table id=\"tables\"><thead><tr><th>table</th><th>policy</th><th>format</th>\
         <th>data files</th><th>small files</th><th>average size</th><th>data</th>\
         <th>delete files</th><th>snapshots</th><th>properties</th></tr></thead><tbody>",
    );
    for t in tables {
        let props = if let Some(e) = &t.error {
            format!("<span class=\"bad\">error: {}</span>", escape(e))
        } else if t.properties_in_sync {
            "<span class=\"ok\">in sync</span>".to_string()
        } else {
            format!(
                "<span class=\"warn\">drift: {}</span>",
                escape(&t.drifted_keys.join(", "))
            )
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{}</td></tr>",
            escape(&t.table),
            escape(&t.policy),
            t.format_version
                .map(|v| format!("v{v}"))
                .unwrap_or_else(|| "?".into()),
            t.data_files,
            t.small_files,
            human_bytes(t.average_file_bytes as u64),
            human_bytes(t.data_bytes),
            t.delete_files,
            t.snapshots,
            props
        );
    }
    h.push_str("</tbody></table>");
}

/// A file-size histogram card per table.
fn histograms_section(h: &mut String, tables: &[TableStatus]) {
    h.push_str("<h2>Data file sizes</h2><div class=\"cards\">");
    let labels = bucket_labels();
    for t in tables {
        let max = t
            .file_size_buckets
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(1);
        let _ = write!(
            h,
            "<div class=\"card\"><h3>{}</h3><div class=\"hist\">",
            escape(&t.table)
        );
        for (label, count) in labels.iter().zip(t.file_size_buckets) {
            // Bar width in percent of the fullest bucket; an empty bucket gets no bar.
            let width = count * 100 / max;
            let _ = write!(
                h,
                "<span>{}</span><span><span class=\"bar\" style=\"width:{width}%\"></span></span>\
                 <span class=\"n\">{count}</span>",
                escape(label)
            );
        }
        h.push_str("</div></div>");
    }
    h.push_str("</div>");
}

/// Per table: due or not for a compaction, why (the trigger met, the cooldown, the budget, the
/// schedule, nothing to do), and when it was last compacted.
fn watch_section(h: &mut String, watch: &BTreeMap<String, Watch>) {
    if watch.is_empty() {
        h.push_str("<p class=\"muted\">Not evaluated yet.</p>");
        return;
    }
    h.push_str(
        "<table id=\"watch\"><thead><tr><th>table</th><th>state</th><th>why</th>\
         <th>last compacted</th></tr></thead><tbody>",
    );
    for (table, w) in watch {
        let class = match w.state {
            "due" | "queued" => "warn",
            "unavailable" => "bad",
            "healthy" => "ok",
            _ => "muted",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td><span class=\"{class}\">{}</span></td><td>{}</td><td>{}</td></tr>",
            escape(table),
            escape(w.state),
            escape(&w.why),
            w.last_compacted_ms
                .map(time_ms)
                .unwrap_or_else(|| "never".into())
        );
    }
    h.push_str("</tbody></table>");
}

/// The last jobs with their outcome, or why they cannot be shown.
fn jobs_section(h: &mut String, jobs: Result<&[JobRecord], String>) {
    let jobs = match jobs {
        Err(e) => {
            let _ = write!(h, "<p class=\"bad\">jobs unavailable: {}</p>", escape(&e));
            return;
        }
        Ok([]) => {
            h.push_str("<p class=\"muted\">No jobs yet.</p>");
            return;
        }
        Ok(jobs) => jobs,
    };
    h.push_str(
        "<table id=\"jobs\"><thead><tr><th>started</th><th>table</th><th>kind</th>\
         <th>reason</th><th>outcome</th><th>duration</th><th>error</th></tr></thead><tbody>",
    );
    for j in jobs {
        let class = match j.status.as_str() {
            "succeeded" | "skipped" => "ok",
            "queued" | "running" | "partial" => "warn",
            _ => "bad",
        };
        let duration = match (j.started_ms, j.finished_ms) {
            (Some(s), Some(f)) => format!("{:.1} s", (f - s) as f64 / 1000.0),
            _ => String::new(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><span class=\"{class}\">{}</span></td><td class=\"n\">{}</td><td>{}</td></tr>",
            time_ms(j.started_ms.unwrap_or(j.created_ms)),
            escape(&j.table),
            escape(&j.kind),
            escape(j.reason.as_deref().unwrap_or(&j.trigger)),
            escape(&j.status),
            duration,
            escape(j.error.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_compaction_section_says_per_table_whether_due_and_why() {
        let mut w = BTreeMap::new();
        w.insert(
            "m.a".to_string(),
            Watch {
                state: "queued",
                why: "trigger:small-files: 40 small files >= 30; waits for the budget (max-concurrent-jobs)".into(),
                last_compacted_ms: None,
            },
        );
        w.insert(
            "m.b".to_string(),
            Watch {
                state: "cooling-down",
                why: "trigger:manifests: 9 manifests >= 8; min-interval until ...".into(),
                last_compacted_ms: Some(0),
            },
        );
        let mut h = String::new();
        watch_section(&mut h, &w);
        assert!(h.contains("<td>m.a</td><td><span class=\"warn\">queued</span></td><td>trigger:small-files: 40 small files &gt;= 30; waits for the budget (max-concurrent-jobs)</td><td>never</td>"), "{h}");
        assert!(h.contains("cooling-down</span></td><td>trigger:manifests: 9 manifests &gt;= 8; min-interval until ...</td><td>1970-01-01 00:00:00 UTC</td>"), "{h}");
    }

    #[test]
    fn bucket_labels_follow_the_bounds() {
        let l = bucket_labels();
        assert_eq!(l[0], "< 1 MiB");
        assert_eq!(l[4], "< 512 MiB");
        assert_eq!(l[5], "\u{2265} 512 MiB");
    }
}
