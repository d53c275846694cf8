//! The `icemaint` binary: parses the command line and hands over to [`icemaint::app`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use icemaint::jobs::{JobKind, JobStatus};

#[derive(Debug, Parser)]
#[command(
    name = "icemaint",
    version,
    about = "Always-on Apache Iceberg table maintenance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the config and every policy file; exit 2 when invalid.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// One line per watched table: policy, format version, files, small files, drift.
    Tables {
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Binpack-compact one table now (Spark rewrite_data_files semantics), as a job.
    Compact {
        /// The table, `namespace.table`.
        table: String,
        #[arg(long, short)]
        config: PathBuf,
        /// Print the plan (groups, input files and bytes per partition, expected outputs) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Spark option override, e.g. --option min-input-files=2 (repeatable).
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite a table's manifests into fewer, partition-clustered ones (Spark rewrite_manifests).
    RewriteManifests {
        /// The table, `namespace.table`.
        table: String,
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Expire old snapshots of one table and delete the files only they referenced.
    Expire {
        /// The table, `namespace.table`.
        table: String,
        #[arg(long, short)]
        config: PathBuf,
        /// Expire snapshots older than this (`5d`, `12h`, `0s`); default: the policy's, else the
        /// table's `history.expire.max-snapshot-age-ms`.
        #[arg(long)]
        older_than: Option<String>,
        /// Keep at least this many snapshots of each branch; default: the policy's, else the
        /// table's `history.expire.min-snapshots-to-keep`.
        #[arg(long)]
        retain_last: Option<String>,
        /// Report what would be expired and deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the job as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete files under a table's location that nothing references and that are older than
    /// `--older-than`.
    RemoveOrphans {
        /// The table, `namespace.table`.
        table: String,
        #[arg(long, short)]
        config: PathBuf,
        /// List the orphans; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only files older than this are orphans (default: the policy's, else 3d; at least 1d).
        #[arg(long)]
        older_than: Option<String>,
        /// Allow `--older-than` under 1d (risks deleting files of commits in flight).
        #[arg(long)]
        force: bool,
        /// Print the job as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create (or reuse) a local SQLite catalog with demo tables and run the daemon on it.
    Demo {
        /// Directory holding the catalog, warehouse, state store and config.
        #[arg(long, default_value = "icemaint-demo")]
        dir: PathBuf,
        /// HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
        /// Policy directory.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        /// Only create the demo tables and config, then exit.
        #[arg(long)]
        setup_only: bool,
    },
    /// Benchmarks (bench/run.sh): print one JSON object.
    #[command(hide = true, subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The machine's limit: read every Parquet file below DIR, write one zstd file per partition
    /// directory with icemaint's writer settings, no Iceberg; MB of input per CPU-second.
    Limit {
        /// A table's data directory.
        #[arg(long)]
        input: PathBuf,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        output: PathBuf,
        /// Worker threads (default: the number of CPUs).
        #[arg(long)]
        threads: Option<usize>,
        /// Rows per batch from the Parquet reader.
        #[arg(long, default_value_t = 8192)]
        batch_size: usize,
        /// Table property for the writer settings, e.g. write.parquet.compression-level=3.
        #[arg(long = "property", value_name = "KEY=VALUE")]
        properties: Vec<String>,
        /// Dictionary encoding per column.
        #[arg(long, value_enum, default_value = "like-input")]
        dictionary: icemaint::bench::Dictionary,
    },
    /// Time compaction planning (load, manifest scan, plan) of a synthetic table.
    Plan {
        #[arg(long, default_value_t = 100_000)]
        files: usize,
        #[arg(long, default_value_t = 1_000)]
        partitions: usize,
        /// Fast-append commits holding the files.
        #[arg(long, default_value_t = 10)]
        commits: usize,
        /// Catalog directory (default: a temporary one, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the directory (a table already in --dir is reused).
        #[arg(long)]
        keep: bool,
        /// Internal: only time planning of the table in --dir.
        #[arg(long, hide = true)]
        plan_only: bool,
    },
}

fn main() -> ExitCode {
    // iceberg-rust captures a backtrace in every `iceberg::Error`, including errors it creates and
    // discards on the read path (a metadata-column lookup per data file). Inheriting
    // RUST_BACKTRACE=1 made that stack walking cost several percent of a compaction's CPU.
    // Library backtraces stay off unless RUST_LIB_BACKTRACE asks for them; panics still follow
    // RUST_BACKTRACE.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet (the async runtime starts below).
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    icemaint::telemetry::init_logging();
    let cli = Cli::parse();
    if let Err(e) = icemaint::crashpoint::check_env() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Command::Check { config } = &cli.command {
        return match icemaint::app::check(config) {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("{p}");
                }
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes joined, so the "what and where" stays together.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let cfg = icemaint::config::Config::load(&config)?;
            icemaint::app::serve(cfg).await
        }
        Command::Tables { config, json } => {
            let tables = icemaint::app::tables(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tables)?);
            } else if tables.is_empty() {
                println!("no watched tables (no catalog table matches a policy)");
            } else {
                for t in &tables {
                    println!("{}", icemaint::app::format_table_line(t));
                }
            }
            Ok(())
        }
        Command::Compact {
            table,
            config,
            dry_run,
            options,
            json,
        } => {
            use std::io::IsTerminal;
            let show = !json && std::io::stderr().is_terminal();
            let (v, ok) =
                icemaint::app::compact_once(&config, &table, dry_run, &options, show).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if dry_run {
                print_plan(&v);
            } else {
                print_result(&v);
            }
            if ok {
                Ok(())
            } else {
                anyhow::bail!(
                    "compaction of {table} {}: {}",
                    v["status"].as_str().unwrap_or("failed"),
                    v["error"].as_str().unwrap_or("see the job detail")
                )
            }
        }
        Command::RewriteManifests {
            table,
            config,
            json,
        } => {
            let (v, ok) = icemaint::app::run_job_once(
                &config,
                &table,
                icemaint::jobs::JobKind::RewriteManifests,
                &Default::default(),
            )
            .await?;
            print_job(&v, json)?;
            if !ok {
                anyhow::bail!(
                    "rewrite-manifests of {table} failed: {}",
                    v["error"].as_str().unwrap_or("see the job detail")
                );
            }
            Ok(())
        }
        Command::Demo {
            dir,
            listen,
            policies,
            setup_only,
        } => icemaint::demo::run(&dir, &listen, &policies, setup_only).await,
        Command::Expire {
            table,
            config,
            older_than,
            retain_last,
            dry_run,
            json,
        } => {
            let overrides = icemaint::maintenance::Overrides {
                older_than: older_than.as_deref().map(duration_flag).transpose()?,
                retain_last: retain_last
                    .as_deref()
                    .map(|v| {
                        v.trim().parse::<u32>().map_err(|_| {
                            anyhow::anyhow!("--retain-last '{v}': expected a positive integer")
                        })
                    })
                    .transpose()?,
                dry_run: Some(dry_run),
                force: false,
            };
            pruning(&config, &table, JobKind::Expire, overrides, json).await
        }
        Command::RemoveOrphans {
            table,
            config,
            dry_run,
            older_than,
            force,
            json,
        } => {
            let overrides = icemaint::maintenance::Overrides {
                older_than: older_than.as_deref().map(duration_flag).transpose()?,
                retain_last: None,
                // Without the flag, the policy's `dry-run` decides.
                dry_run: dry_run.then_some(true),
                force,
            };
            pruning(&config, &table, JobKind::RemoveOrphans, overrides, json).await
        }
        Command::Bench(cmd) => bench(cmd).await,
        Command::Check { .. } => unreachable!("handled before the runtime starts"),
    }
}

async fn bench(cmd: BenchCommand) -> anyhow::Result<()> {
    let report = match cmd {
        BenchCommand::Limit {
            input,
            output,
            threads,
            batch_size,
            properties,
            dictionary,
        } => {
            let properties = properties
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .ok_or_else(|| anyhow::anyhow!("--property expects KEY=VALUE, got {kv:?}"))
                })
                .collect::<anyhow::Result<_>>()?;
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let opts = icemaint::bench::LimitOptions {
                input,
                output,
                threads,
                batch_size,
                properties,
                dictionary,
            };
            // CPU-bound and synchronous: off the async runtime's workers.
            let r = tokio::task::spawn_blocking(move || icemaint::bench::limit(&opts)).await??;
            serde_json::to_value(r)?
        }
        BenchCommand::Plan {
            files,
            partitions,
            commits,
            dir,
            keep,
            plan_only,
        } => serde_json::to_value(
            icemaint::bench::plan(&icemaint::bench::PlanOptions {
                files,
                partitions,
                commits,
                dir,
                keep,
                plan_only,
            })
            .await?,
        )?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn print_plan(v: &serde_json::Value) {
    let p = &v["plan"];
    println!(
        "{}: {} data files, {} candidates, {} groups rewrite {} files ({} bytes) into ~{} files",
        v["table"].as_str().unwrap_or_default(),
        p["total_files"],
        p["candidate_files"],
        p["groups"].as_array().map_or(0, Vec::len),
        p["rewrite_files"],
        p["rewrite_bytes"],
        p["expected_output_files"]
    );
    for g in p["groups"].as_array().into_iter().flatten() {
        println!(
            "  group {:>3}  {:<40} files={:<5} bytes={:<12} -> {} file(s)",
            g["id"],
            g["partition"].as_str().unwrap_or_default(),
            g["files"].as_array().map_or(0, Vec::len),
            g["input_bytes"],
            g["expected_output_files"]
        );
    }
}

fn print_result(v: &serde_json::Value) {
    let r = &v["result"];
    if v["status"] == "skipped" {
        println!(
            "job {} skipped: {}",
            v["job_id"].as_str().unwrap_or_default(),
            r["reason"].as_str().unwrap_or("nothing to do")
        );
        return;
    }
    println!(
        "job {} {}: groups {}/{} committed, {} conflicts, files {} -> {}, bytes {} -> {}, snapshots {}",
        v["job_id"].as_str().unwrap_or_default(),
        v["status"].as_str().unwrap_or_default(),
        r["groups_committed"],
        r["groups_planned"],
        r["conflicts"],
        r["files_read"],
        r["files_written"],
        r["bytes_read"],
        r["bytes_written"],
        r["snapshot_ids"]
    );
}

/// Prints a finished job: JSON, or one line with its status and result.
fn print_job(v: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        println!(
            "job {} {} {}: {}",
            v["job_id"].as_str().unwrap_or_default(),
            v["kind"].as_str().unwrap_or_default(),
            v["status"].as_str().unwrap_or_default(),
            v["result"]
        );
    }
    Ok(())
}

fn duration_flag(v: &str) -> anyhow::Result<std::time::Duration> {
    icemaint::policy::parse_duration(v).map_err(|e| anyhow::anyhow!("--older-than: {e}"))
}

/// Runs one expiry or orphan-removal job and prints its result; a failed or partial job is an
/// error (exit 1) after the result is printed.
async fn pruning(
    config: &std::path::Path,
    table: &str,
    kind: JobKind,
    overrides: icemaint::maintenance::Overrides,
    json: bool,
) -> anyhow::Result<()> {
    let (id, outcome) = icemaint::maintenance::one_shot(config, table, kind, overrides).await?;
    if json {
        let v = serde_json::json!({
            "job_id": id,
            "table": table,
            "kind": kind.as_str(),
            "status": outcome.status.as_str(),
            "error": outcome.error,
            "detail": outcome.detail,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}",
            icemaint::maintenance::summary_line(table, kind, &outcome)
        );
    }
    match (outcome.status, outcome.error) {
        (JobStatus::Failed | JobStatus::Partial, Some(e)) => Err(anyhow::anyhow!(e)),
        (JobStatus::Failed | JobStatus::Partial, None) => Err(anyhow::anyhow!(
            "{} {}",
            kind.as_str(),
            outcome.status.as_str()
        )),
        _ => Ok(()),
    }
}
