//! `icemaint simulate`: runs [`crate::compaction::simulate`] (the real planner, no I/O) for a
//! synthetic write pattern and prints the write amplification, the commits and the hot and cold
//! partitions' file counts over time, as a table or `--json`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::compaction::options;
use crate::compaction::simulate::{self, Outcome, Scenario};
use crate::util::{human_bytes, parse_duration};

use super::parse_key_values;

/// The command's arguments besides the scenario.
pub struct Args<'a> {
    pub policy: Option<&'a Path>,
    pub options: &'a [String],
    pub tick: &'a str,
    pub json: bool,
}

/// Resolves the options (the policy's `[compaction]` and `[properties]`, then `--option`), runs
/// the scenario and prints it.
pub fn run(mut scenario: Scenario, args: Args<'_>) -> anyhow::Result<()> {
    scenario.tick_seconds = parse_duration(args.tick)
        .map_err(|e| anyhow::anyhow!("--tick: {e}"))?
        .as_secs()
        .max(1);
    let (mut merged, properties) = match args.policy {
        Some(path) => policy_options(path)?,
        None => (BTreeMap::new(), HashMap::new()),
    };
    merged.extend(parse_key_values::<BTreeMap<String, String>>(
        "option",
        args.options,
    )?);
    let resolved = options::resolve(&merged, &properties).map_err(|errs| {
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("{}", msgs.join("; "))
    })?;
    let outcome = simulate::run(&scenario, &resolved);
    if args.json {
        let v =
            serde_json::json!({ "scenario": scenario, "options": resolved, "outcome": outcome });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_table(&scenario, &outcome);
    }
    Ok(())
}

/// The `[compaction]` options and the `[properties]` of one policy file.
fn policy_options(
    path: &Path,
) -> anyhow::Result<(BTreeMap<String, String>, HashMap<String, String>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read policy {}: {e}", path.display()))?;
    let (policy, _) = crate::policy::parse_policy(path, &text).map_err(|problems| {
        let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        anyhow::anyhow!("{}", msgs.join("; "))
    })?;
    let opts = policy.compaction.map(|c| c.options).unwrap_or_default();
    Ok((opts, policy.properties.into_iter().collect()))
}

fn print_table(scenario: &Scenario, o: &Outcome) {
    println!(
        "{:>6} {:>4} {:>4} {:>9} {:>13} {:>10} {:>12}",
        "tick", "day", "hot", "hot-files", "written-files", "cold-files", "read"
    );
    for p in &o.points {
        println!(
            "{:>6} {:>4} {:>4} {:>9} {:>13} {:>10} {:>12}",
            p.tick,
            p.day,
            p.hot_partitions,
            p.max_hot_partition_files,
            p.written_partition_files,
            p.cold_files,
            human_bytes(p.bytes_read)
        );
    }
    println!(
        "appended {} in {} ticks, rewritten {}: write amplification {:.2}",
        human_bytes(o.bytes_appended),
        scenario.ticks_per_day * scenario.days,
        human_bytes(o.bytes_rewritten),
        o.write_amplification
    );
    println!(
        "commits {}, written partition at most {} files, files per partition at the end {:?} (binpack of a day: {})",
        o.commits,
        o.max_written_partition_files,
        o.final_files_per_partition,
        o.binpack_files_per_partition
    );
}
