//! The bodies of the `icemaint` commands; `main.rs` only parses the command line and calls one
//! of these. Each loads the configuration, connects what it needs, and prints its result (lines
//! for people, `--json` for scripts). Bad input is a one-line error and a non-zero exit
//! (`main` prints the error chain on one line).

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::daemon::Context;
use crate::policy::PolicySet;

pub mod bench;
mod jobs;
mod print;

pub use jobs::{compact, expire, remove_orphans, rewrite_manifests};

/// Parses repeated `--{flag} key=value` arguments.
pub fn parse_key_values<C>(flag: &str, args: &[String]) -> anyhow::Result<C>
where
    C: FromIterator<(String, String)>,
{
    args.iter()
        .map(|a| {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--{flag} '{a}': expected key=value"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// `icemaint check`: validates the config and every policy file; all problems at once, exit 2.
pub fn check(config_path: &Path) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match PolicySet::load_dir(&config.policies.dir) {
        Ok(set) => {
            let names: Vec<&str> = set.policies.iter().map(|p| p.name.as_str()).collect();
            println!(
                "{}: ok ({} policies: {})",
                config_path.display(),
                names.len(),
                names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for p in e.problems() {
                eprintln!("{p}");
            }
            ExitCode::from(2)
        }
    }
}

/// `icemaint serve`: runs the daemon until SIGTERM / Ctrl-C.
pub async fn serve(config_path: &Path) -> anyhow::Result<()> {
    crate::runtime::serve(Config::load(config_path)?).await
}

/// `icemaint tables`: the status of every watched table, a line each or JSON.
pub async fn tables(config_path: &Path, json: bool) -> anyhow::Result<()> {
    let ctx = Context::new(Config::load(config_path)?).await?;
    let mut tables = Vec::new();
    for (name, policy) in ctx.watched_tables().await? {
        match ctx.inspect(&name, &policy).await {
            Ok(s) => tables.push(s),
            Err(e) => tracing::warn!(table = name, error = %e, "table could not be inspected"),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&tables)?);
    } else if tables.is_empty() {
        println!("no watched tables (no catalog table matches a policy)");
    } else {
        for t in &tables {
            println!("{}", print::table_line(t));
        }
    }
    Ok(())
}

/// `icemaint demo`: creates (or reuses) the demo directory, then runs the daemon on it unless
/// `setup_only`. Without `policies`, the platform's policies compiled into the binary are used.
pub async fn demo(
    dir: &Path,
    listen: &str,
    policies: Option<&Path>,
    setup_only: bool,
) -> anyhow::Result<()> {
    let config = crate::demo::setup(dir, listen, policies).await?;
    print::demo_banner(&config, dir, listen, setup_only)?;
    if setup_only {
        return Ok(());
    }
    crate::runtime::serve(config).await
}
