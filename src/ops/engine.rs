//! Which engine rewrites a compaction job's files, and the Spark engine as a job: the policy's
//! `[compaction] engine` (or the run's `engine` override) decides, `auto` by the plan's input
//! against `spark-min-input-bytes`; a Spark run is submitted through [`crate::spark`] after
//! icemaint planned (nothing to do → no Spark job), under the job's lease and token, and its
//! result becomes the job detail and the same metrics a native run records.

use std::collections::BTreeMap;

use iceberg::spec::Operation;
use iceberg::table::Table;

use crate::compaction::Prepared;
use crate::jobs::{JobOutcome, JobStatus};
use crate::policy::{Engine, Policy};
use crate::spark::{self, Finished, SparkError};

use super::Deps;

/// The per-run override naming the engine (`--engine`, `"engine"` in the API body); not a
/// Spark option, so it is taken out of the overrides before they are resolved.
pub const ENGINE_KEY: &str = "engine";

/// Takes the run's `engine` out of `overrides`: the rest are rewrite options.
pub fn split(
    overrides: &BTreeMap<String, String>,
) -> Result<(Option<Engine>, BTreeMap<String, String>), String> {
    let mut rest = overrides.clone();
    let engine = match rest.remove(ENGINE_KEY) {
        None => None,
        Some(e) => Some(
            Engine::parse(&e)
                .ok_or_else(|| format!("unknown engine '{e}' (expected native, spark or auto)"))?,
        ),
    };
    Ok((engine, rest))
}

/// The engine in force: the run's, else the policy's.
pub fn requested(policy: &Policy, run: Option<Engine>) -> Engine {
    run.or_else(|| policy.compaction.as_ref().map(|c| c.engine))
        .unwrap_or_default()
}

/// Native or Spark for a plan reading `input_bytes`: `auto` hands plans above `min_spark_bytes`
/// to Spark. Pure.
pub fn choose(engine: Engine, input_bytes: u64, min_spark_bytes: u64) -> Engine {
    match engine {
        Engine::Auto if input_bytes > min_spark_bytes => Engine::Spark,
        Engine::Auto => Engine::Native,
        e => e,
    }
}

/// The policy's options with the run's overrides on top: what Spark is given.
pub fn merged_options(
    policy: &Policy,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut m = policy
        .compaction
        .as_ref()
        .map(|c| c.options.clone())
        .unwrap_or_default();
    m.extend(overrides.clone());
    m
}

/// Runs the planned compaction on Spark; `prepared` is icemaint's plan of the same table.
pub async fn run_spark(
    deps: Deps<'_>,
    table: &str,
    job_id: &str,
    options: &BTreeMap<String, String>,
    prepared: Prepared,
) -> JobOutcome {
    let started = std::time::Instant::now();
    let starting = prepared.table.metadata().current_snapshot_id();
    let mut detail = serde_json::json!({
        "engine": "spark",
        "plan": prepared.view(),
        "starting_snapshot_id": starting,
        "spark": { "master": deps.spark.master },
    });
    count(deps, table, "planned", prepared.plan.groups.len() as u64);
    let run = spark::Run {
        spark: deps.spark,
        catalog: &deps.catalog.config,
        table,
        job_id,
        options,
    };
    tracing::info!(
        table,
        job_id,
        input_bytes = prepared.plan.rewrite_bytes,
        groups = prepared.plan.groups.len(),
        "compaction handed to spark"
    );
    let finished = match spark::run(&run, deps.cancel).await {
        Ok(f) => f,
        Err(e) => return spark_failed(deps, table, &prepared, e, detail, started),
    };
    let snapshots = match deps.catalog.load(table).await {
        Ok(t) => replaced_since(&t, starting),
        Err(e) => {
            tracing::warn!(table, error = %e, "reading the table back after spark failed");
            Vec::new()
        }
    };
    record(deps, table, &prepared, &finished, &snapshots);
    fill(&mut detail, &finished, &snapshots, started);
    let status = if finished.row.failed_data_files_count == 0 {
        JobStatus::Succeeded
    } else if finished.row.rewritten_data_files_count > 0 {
        JobStatus::Partial
    } else {
        JobStatus::Failed
    };
    JobOutcome {
        status,
        error: (status != JobStatus::Succeeded).then(|| {
            format!(
                "spark failed to rewrite {} data files",
                finished.row.failed_data_files_count
            )
        }),
        detail,
    }
}

/// A failed Spark run: the job fails with Spark's error line; Spark's commit is atomic, so the
/// table is as it was.
fn spark_failed(
    deps: Deps<'_>,
    table: &str,
    prepared: &Prepared,
    e: SparkError,
    mut detail: serde_json::Value,
    started: std::time::Instant,
) -> JobOutcome {
    tracing::warn!(table, error = %e, "spark compaction failed");
    count(deps, table, "failed", prepared.plan.groups.len() as u64);
    detail["seconds"] = started.elapsed().as_secs_f64().into();
    JobOutcome::failed(e.to_string(), detail)
}

/// `(snapshot id, added bytes)` of the replace snapshots committed after `starting`, oldest
/// first: Spark's commits (one, or several with partial progress).
fn replaced_since(t: &Table, starting: Option<i64>) -> Vec<(i64, u64)> {
    let m = t.metadata();
    let mut out = Vec::new();
    let mut cur = m.current_snapshot();
    while let Some(s) = cur {
        if Some(s.snapshot_id()) == starting {
            break;
        }
        if s.summary().operation == Operation::Replace {
            let added = s
                .summary()
                .additional_properties
                .get("added-files-size")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            out.push((s.snapshot_id(), added));
        }
        cur = s.parent_snapshot_id().and_then(|p| m.snapshot_by_id(p));
    }
    out.reverse();
    out
}

/// The metrics a native run records, from Spark's counts.
fn record(
    deps: Deps<'_>,
    table: &str,
    prepared: &Prepared,
    f: &Finished,
    snapshots: &[(i64, u64)],
) {
    let m = deps.metrics;
    let label = [table];
    let written: u64 = snapshots.iter().map(|s| s.1).sum();
    m.compaction_files_read_total
        .with_label_values(&label)
        .inc_by(f.row.rewritten_data_files_count);
    m.compaction_bytes_read_total
        .with_label_values(&label)
        .inc_by(f.row.rewritten_bytes_count);
    m.compaction_files_written_total
        .with_label_values(&label)
        .inc_by(f.row.added_data_files_count);
    m.compaction_bytes_written_total
        .with_label_values(&label)
        .inc_by(written);
    let outcome = if f.row.failed_data_files_count == 0 {
        "committed"
    } else {
        "failed"
    };
    count(deps, table, outcome, prepared.plan.groups.len() as u64);
}

fn count(deps: Deps<'_>, table: &str, outcome: &str, n: u64) {
    deps.metrics
        .compaction_groups_total
        .with_label_values(&[table, outcome])
        .inc_by(n);
}

/// The job detail of a finished run, in the native report's field names where they exist.
fn fill(
    detail: &mut serde_json::Value,
    f: &Finished,
    snapshots: &[(i64, u64)],
    started: std::time::Instant,
) {
    detail["files_read"] = f.row.rewritten_data_files_count.into();
    detail["bytes_read"] = f.row.rewritten_bytes_count.into();
    detail["files_written"] = f.row.added_data_files_count.into();
    detail["bytes_written"] = snapshots.iter().map(|s| s.1).sum::<u64>().into();
    detail["delete_files_removed"] = f.row.removed_delete_files_count.into();
    detail["snapshot_ids"] = snapshots.iter().map(|s| s.0).collect::<Vec<_>>().into();
    detail["seconds"] = started.elapsed().as_secs_f64().into();
    detail["spark"]["application_id"] = f.application_id.clone().into();
    detail["spark"]["driver_pid"] = f.driver_pid.into();
    detail["spark"]["result"] = serde_json::to_value(&f.row).expect("serializable");
}

/// Checks a Spark run's request before a job is recorded: a master, Spark's options only.
pub fn check_spark(
    deps_spark: &crate::config::SparkConfig,
    policy: &Policy,
    overrides: &BTreeMap<String, String>,
) -> Result<(), SparkError> {
    spark::check(deps_spark, &merged_options(policy, overrides))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_spark_above_the_threshold_only() {
        assert_eq!(choose(Engine::Auto, 101, 100), Engine::Spark);
        assert_eq!(choose(Engine::Auto, 100, 100), Engine::Native);
        assert_eq!(choose(Engine::Spark, 1, 100), Engine::Spark);
        assert_eq!(choose(Engine::Native, 1000, 100), Engine::Native);
    }

    #[test]
    fn the_engine_override_is_split_off() {
        let o = BTreeMap::from([
            ("engine".to_string(), "spark".to_string()),
            ("min-input-files".to_string(), "2".to_string()),
        ]);
        let (e, rest) = split(&o).unwrap();
        assert_eq!(e, Some(Engine::Spark));
        assert_eq!(rest.len(), 1);
        let bad = BTreeMap::from([("engine".to_string(), "flink".to_string())]);
        assert!(split(&bad).unwrap_err().contains("unknown engine 'flink'"));
    }
}
