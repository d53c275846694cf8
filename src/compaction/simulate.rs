//! `icemaint simulate`: the real planner ([`super::plan::plan`]) driven by a synthetic write
//! pattern, with no I/O. Pure and deterministic: the clock is the simulated one.
//!
//! Model: every tick, `files_per_tick` files of `file_size_bytes` are appended to each of
//! `partitions_per_tick` partitions of the current day (`p=<i>/day=<d>`); every
//! `compact_every_ticks` ticks, half a tick after the append, a compaction plans the live files
//! and applies every group (a group's bytes become `expected_output_files` files of equal size).
//! After the last tick the clock moves past twice `hot-partition-age` and compactions run until
//! one finds nothing to do, so every day ends cold and settled. Compactions keep the watermark a real one records
//! in its snapshot summary (incremental planning, settled partitions).
//!
//! A compaction output carries, as in a real table, the commit time of the newest writer append
//! before the compaction (see `rewrite::committed`). Write amplification is the bytes the
//! compactions read over the bytes appended, as the end-to-end test measures it.

use serde::Serialize;

use super::options::CompactionOptions;
use super::plan::{CandidateFile, Plan, PlanSettings, plan};

/// A synthetic write pattern and compaction schedule.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub files_per_tick: usize,
    pub file_size_bytes: u64,
    pub partitions_per_tick: usize,
    pub ticks_per_day: usize,
    pub days: usize,
    pub compact_every_ticks: usize,
    pub tick_seconds: u64,
}

impl Default for Scenario {
    /// The platform's rollup writer: one ~55 kB file every 15 minutes into the current day,
    /// compaction every 30 minutes, three days.
    fn default() -> Self {
        Scenario {
            files_per_tick: 1,
            file_size_bytes: 55_000,
            partitions_per_tick: 1,
            ticks_per_day: 96,
            days: 3,
            compact_every_ticks: 2,
            tick_seconds: 900,
        }
    }
}

/// The table right after one compaction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub tick: usize,
    pub day: usize,
    /// Partitions with a file committed within `hot-partition-age`.
    pub hot_partitions: usize,
    /// Data files of the largest hot partition (0 when none is hot).
    pub max_hot_partition_files: usize,
    /// Data files of the largest partition written at the last tick (hot or not).
    pub written_partition_files: usize,
    /// Data files of all cold partitions.
    pub cold_files: usize,
    pub bytes_read: u64,
    pub groups: usize,
}

/// What a simulation printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub bytes_appended: u64,
    /// Bytes read by compactions (the jobs' `bytes_read`).
    pub bytes_rewritten: u64,
    pub write_amplification: f64,
    /// Compactions that committed something.
    pub commits: usize,
    /// The most data files a partition being written held right after a compaction.
    pub max_written_partition_files: usize,
    /// Files per partition at the end (all cold), and what Spark's binpack makes of the
    /// partition's appended bytes, per day.
    pub final_files_per_partition: Vec<usize>,
    pub binpack_files_per_partition: usize,
    pub points: Vec<Point>,
}

/// The live files and the counters of a running simulation.
struct State {
    files: Vec<CandidateFile>,
    next_id: usize,
    appended: u64,
    rewritten: u64,
    commits: usize,
    last_append_ms: Option<i64>,
    /// The last committed compaction's watermark `(cold-through, planned-at)`, as the real one
    /// records it in its snapshot summary (see `super::changed`).
    watermark: Option<(i64, i64)>,
}

/// At most this many compactions after the last tick (two suffice: see [`run`]).
pub const FINAL_RUNS: usize = 3;

/// Runs `scenario` with the compaction `options` (their `hot-partition-age` included).
pub fn run(scenario: &Scenario, options: &CompactionOptions) -> Outcome {
    let base = PlanSettings::new(options, 0);
    let mut st = State {
        files: Vec::new(),
        next_id: 0,
        appended: 0,
        rewritten: 0,
        commits: 0,
        last_append_ms: None,
        watermark: None,
    };
    let mut points = Vec::new();
    let total_ticks = scenario.ticks_per_day * scenario.days;
    let every = scenario.compact_every_ticks.max(1);
    for tick in 0..total_ticks {
        let now = tick_ms(scenario, tick);
        append(&mut st, scenario, tick, now);
        if (tick + 1) % every == 0 {
            // Half a tick after the append, as a cron schedule between the writer's commits.
            let at = now + tick_ms(scenario, 1) / 2;
            points.push(compact(&mut st, scenario, &base, options, tick, at));
        }
    }
    // Once every partition is settled: twice the hot age after the last tick, compactions until
    // one finds nothing to do.
    let age_ms = options.hot_partition_age_secs.unwrap_or(0) as i64 * 1000;
    let end = tick_ms(scenario, total_ticks) + 2 * age_ms;
    for k in 0..FINAL_RUNS {
        let point = compact(
            &mut st,
            scenario,
            &base,
            options,
            total_ticks,
            end + k as i64,
        );
        let done = point.groups == 0;
        points.push(point);
        if done {
            break;
        }
    }
    outcome(st, scenario, &base, points)
}

fn last_tick(scenario: &Scenario) -> usize {
    (scenario.ticks_per_day * scenario.days).saturating_sub(1)
}

fn tick_ms(scenario: &Scenario, tick: usize) -> i64 {
    tick as i64 * scenario.tick_seconds as i64 * 1000
}

fn partition(scenario: &Scenario, tick: usize, p: usize) -> String {
    format!("p={p}/day={}", tick / scenario.ticks_per_day.max(1))
}

fn append(st: &mut State, scenario: &Scenario, tick: usize, now: i64) {
    for p in 0..scenario.partitions_per_tick {
        for _ in 0..scenario.files_per_tick {
            st.files.push(CandidateFile {
                path: format!("f{:08}", st.next_id).into(),
                size_bytes: scenario.file_size_bytes,
                record_count: scenario.file_size_bytes.max(1),
                spec_id: 0,
                partition: partition(scenario, tick, p).into(),
                delete_file_count: 0,
                deleted_records: 0,
                committed_ms: Some(now),
            });
            st.next_id += 1;
            st.appended += scenario.file_size_bytes;
        }
    }
    st.last_append_ms = Some(now);
}

/// Plans the live files at `now` and applies every group.
fn compact(
    st: &mut State,
    scenario: &Scenario,
    base: &PlanSettings,
    options: &CompactionOptions,
    tick: usize,
    now: i64,
) -> Point {
    let mut settings = base.clone().with_hot_cutoff(options, now);
    if let (Some(_), Some((cold_through, planned_at))) = (settings.hot_cutoff_ms, st.watermark) {
        settings.changed_since_ms = Some(cold_through);
        settings.settled_before_ms = settings.settled_before_ms.max(Some(planned_at));
    }
    let p = plan(&st.files, &settings);
    apply(st, &p);
    if let (Some(cutoff), false) = (settings.hot_cutoff_ms, p.groups.is_empty()) {
        st.watermark = Some((cutoff, now));
    }
    let (hot_partitions, max_hot, cold_files) = hotness(&st.files, &settings);
    let written: std::collections::BTreeSet<String> = (0..scenario.partitions_per_tick)
        .map(|p| partition(scenario, tick.min(last_tick(scenario)), p))
        .collect();
    let mut per_written = std::collections::BTreeMap::<&str, usize>::new();
    for f in st
        .files
        .iter()
        .filter(|f| written.contains(f.partition.as_str()))
    {
        *per_written.entry(&f.partition).or_default() += 1;
    }
    Point {
        written_partition_files: per_written.values().copied().max().unwrap_or(0),
        tick,
        day: tick / scenario.ticks_per_day.max(1),
        hot_partitions,
        max_hot_partition_files: max_hot,
        cold_files,
        bytes_read: p.rewrite_bytes,
        groups: p.groups.len(),
    }
}

/// Replaces each group's files by `expected_output_files` files of near-equal size.
fn apply(st: &mut State, p: &Plan) {
    if p.groups.is_empty() {
        return;
    }
    st.commits += 1;
    st.rewritten += p.rewrite_bytes;
    let gone: std::collections::HashSet<&str> = p.groups.iter().flat_map(|g| g.paths()).collect();
    st.files.retain(|f| !gone.contains(f.path.as_str()));
    for g in &p.groups {
        let n = g.expected_output_files.max(1) as u64;
        for k in 0..n {
            let size = g.input_bytes / n + u64::from(k < g.input_bytes % n);
            st.files.push(CandidateFile {
                path: format!("f{:08}", st.next_id).into(),
                size_bytes: size,
                record_count: size.max(1),
                spec_id: g.spec_id,
                partition: g.partition.as_str().into(),
                delete_file_count: 0,
                deleted_records: 0,
                committed_ms: st.last_append_ms,
            });
            st.next_id += 1;
        }
    }
}

/// (hot partitions, files of the largest hot partition, files of cold partitions).
fn hotness(files: &[CandidateFile], s: &PlanSettings) -> (usize, usize, usize) {
    let hot = super::plan::hot_keys(files, s);
    let mut per_hot = std::collections::BTreeMap::<&str, usize>::new();
    let mut cold = 0;
    for f in files {
        if hot.contains(&(f.spec_id, f.partition.as_str())) {
            *per_hot.entry(&f.partition).or_default() += 1;
        } else {
            cold += 1;
        }
    }
    (
        hot.len(),
        per_hot.values().copied().max().unwrap_or(0),
        cold,
    )
}

fn outcome(st: State, scenario: &Scenario, s: &PlanSettings, points: Vec<Point>) -> Outcome {
    let mut per_partition = std::collections::BTreeMap::<&str, usize>::new();
    for f in &st.files {
        *per_partition.entry(&f.partition).or_default() += 1;
    }
    let day_bytes =
        scenario.file_size_bytes * scenario.files_per_tick as u64 * scenario.ticks_per_day as u64;
    Outcome {
        bytes_appended: st.appended,
        bytes_rewritten: st.rewritten,
        write_amplification: if st.appended == 0 {
            0.0
        } else {
            st.rewritten as f64 / st.appended as f64
        },
        commits: st.commits,
        max_written_partition_files: points
            .iter()
            .map(|p| p.written_partition_files)
            .max()
            .unwrap_or(0),
        final_files_per_partition: per_partition.into_values().collect(),
        binpack_files_per_partition: binpack_files(s, day_bytes),
        points,
    }
}

/// What Spark's binpack makes of a partition holding `bytes` in small files: one group, written
/// as `expected_output_files` files (a single file below the min stays as it is).
pub fn binpack_files(s: &PlanSettings, bytes: u64) -> usize {
    s.expected_output_files(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(target: u64, hot_secs: Option<u64>) -> CompactionOptions {
        CompactionOptions {
            target_file_size_bytes: target,
            min_file_size_bytes: target * 3 / 4,
            max_file_size_bytes: target * 18 / 10,
            hot_partition_age_secs: hot_secs,
            ..CompactionOptions::default()
        }
    }

    const MIB: u64 = 1024 * 1024;

    /// The measured scenario with Spark's rules: every run rewrites the growing day.
    #[test]
    fn spark_rules_rewrite_the_growing_day() {
        let small = run(&Scenario::default(), &options(40 * MIB, None));
        assert!(
            small.write_amplification > 5.0,
            "{}",
            small.write_amplification
        );
        let large = run(&Scenario::default(), &options(MIB, None));
        assert!(
            large.write_amplification > 2.0,
            "{}",
            large.write_amplification
        );
    }

    /// The acceptance bounds of the issue, on the measured scenario with a 1 h hot age.
    #[test]
    fn hot_partitions_bound_write_amplification() {
        for (target, bound) in [(40 * MIB, 3.0), (MIB, 2.0)] {
            let o = run(&Scenario::default(), &options(target, Some(3600)));
            assert!(
                o.write_amplification <= bound,
                "target {target}: WA {} > {bound}",
                o.write_amplification
            );
            assert!(o.max_written_partition_files <= 20, "{o:?}");
            for n in &o.final_files_per_partition {
                assert!(*n <= o.binpack_files_per_partition, "{o:?}");
            }
            assert_eq!(o.final_files_per_partition.len(), 3);
        }
    }

    #[test]
    fn deterministic_and_consistent() {
        let s = Scenario {
            partitions_per_tick: 3,
            days: 2,
            ..Scenario::default()
        };
        let o = options(4 * MIB, Some(1800));
        let a = run(&s, &o);
        assert_eq!(a, run(&s, &o));
        assert_eq!(a.bytes_appended, 55_000 * 96 * 2 * 3);
        assert_eq!(
            a.bytes_rewritten,
            a.points.iter().map(|p| p.bytes_read).sum::<u64>()
        );
        assert_eq!(a.final_files_per_partition.len(), 6);
        // The last point is the final compaction: nothing is hot any more.
        assert_eq!(a.points.last().unwrap().hot_partitions, 0);
    }
}
