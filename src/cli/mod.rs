//! The bodies of the `icemaint` commands; `main.rs` only parses the command line and calls one
//! of these. Each loads the configuration, connects what it needs, and prints its result (lines
//! for people, `--json` for scripts). Bad input is a one-line error and a non-zero exit
//! (`main` prints the error chain on one line).

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::daemon::Context;
use crate::policy::PolicySet;
use crate::tomlcheck::Problem;

pub mod bench;
mod jobs;
mod print;
pub mod simulate;

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

/// `icemaint check`: validates the config and every policy file; every problem of both in one
/// run, one per line on stderr, exit 2. The policies are checked even when other config keys are
/// bad, as long as the policy directory can be told.
pub fn check(config_path: &Path) -> ExitCode {
    match check_all(config_path) {
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
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            ExitCode::from(2)
        }
    }
}

/// The policies of a valid configuration, or every problem of the configuration and of the
/// policies (config problems first).
fn check_all(config_path: &Path) -> Result<PolicySet, Vec<Problem>> {
    let report = Config::check(config_path);
    let mut problems = report.problems;
    let Some(dir) = report.policies_dir else {
        return Err(problems);
    };
    match PolicySet::load_dir(&dir) {
        Ok(set) if problems.is_empty() => Ok(set),
        Ok(_) => Err(problems),
        Err(e) => {
            problems.extend_from_slice(e.problems());
            Err(problems)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two bad config keys and a bad policy: all three in one run, config problems first.
    #[test]
    fn check_reports_config_and_policy_problems_together() {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("pol");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(
            policies.join("a.toml"),
            "version = 1\ntables = [\"m.t\"]\nshape = 1\n",
        )
        .unwrap();
        let config = dir.path().join("icemaint.toml");
        std::fs::write(
            &config,
            "[catalog]\ntype = \"sql\"\nuri = \"sqlite://c.db\"\ncolour = 1\n\
             [server]\nbogus = 2\n[policies]\ndir = \"pol\"\n",
        )
        .unwrap();
        let problems = check_all(&config).unwrap_err();
        let got: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let c = config.display();
        let a = policies.join("a.toml");
        let a = a.display();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(
            got[0].starts_with(&format!("{c}:4: unknown key 'catalog.colour'")),
            "{got:#?}"
        );
        assert!(
            got[1].starts_with(&format!("{c}:6: unknown key 'server.bogus'")),
            "{got:#?}"
        );
        assert!(
            got[2].starts_with(&format!("{a}:3: unknown key 'shape'")),
            "{got:#?}"
        );

        // Fixed config and policy: the policy set.
        std::fs::write(policies.join("a.toml"), "version = 1\ntables = [\"m.t\"]\n").unwrap();
        std::fs::write(
            &config,
            "[catalog]\ntype = \"sql\"\nuri = \"sqlite://c.db\"\n[policies]\ndir = \"pol\"\n",
        )
        .unwrap();
        assert_eq!(check_all(&config).unwrap().policies.len(), 1);

        // A config that is not TOML: its one problem, the policies cannot be found.
        std::fs::write(&config, "[catalog\n").unwrap();
        assert_eq!(check_all(&config).unwrap_err().len(), 1);
    }
}
