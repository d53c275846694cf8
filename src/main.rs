//! The `icemaint` binary: the command-line definitions (clap) and nothing else; every command's
//! body is in [`icemaint::cli`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use icemaint::cli;

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
        /// Who rewrites: icemaint (native), Spark through [spark] (spark), or by the plan's size
        /// (auto). Default: the policy's `engine`.
        #[arg(long, value_parser = ["native", "spark", "auto"])]
        engine: Option<String>,
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
        /// Policy directory (default: the platform's policies built into the binary, written to
        /// DIR/policies).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Only create the demo tables and config, then exit.
        #[arg(long)]
        setup_only: bool,
    },
    /// Simulate compaction of a synthetic write pattern with the real planner (no I/O): write
    /// amplification, commits, hot and cold partitions' file counts over time.
    Simulate {
        /// Take `[compaction]` options and `[properties]` from this policy file.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Compaction option (Spark's names, `hot-partition-age`), e.g. --option
        /// hot-partition-age=1h (repeatable; after the policy's).
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
        /// Files appended to each written partition per tick.
        #[arg(long, default_value_t = 1)]
        files_per_tick: usize,
        /// Size of each appended file in bytes.
        #[arg(long, default_value_t = 55_000)]
        file_size: u64,
        /// Partitions of the current day written each tick.
        #[arg(long, default_value_t = 1)]
        partitions_per_tick: usize,
        #[arg(long, default_value_t = 96)]
        ticks_per_day: usize,
        #[arg(long, default_value_t = 3)]
        days: usize,
        /// Compact every this many ticks.
        #[arg(long, default_value_t = 2)]
        compact_every: usize,
        /// Simulated time per tick.
        #[arg(long, default_value = "15m")]
        tick: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
    Plan(icemaint::bench::PlanOptions),
    /// Time orphan-file removal over a synthetic table location of many objects.
    RemoveOrphans {
        /// Objects under the table's data directory, orphans included.
        #[arg(long, default_value_t = 1_000_000)]
        objects: usize,
        /// Unreferenced objects among them (dated two days back, deleted by the run).
        #[arg(long, default_value_t = 10_000)]
        orphans: usize,
        #[arg(long, default_value_t = 1_000)]
        partitions: usize,
        /// Fast-append commits referencing the other objects.
        #[arg(long, default_value_t = 10)]
        commits: usize,
        #[command(flatten)]
        dir: icemaint::bench::BenchDir,
        /// S3 endpoint serving --s3-data-dir (s3s-fs); credentials in
        /// ICEMAINT_BENCH_S3_ACCESS_KEY / ICEMAINT_BENCH_S3_SECRET_KEY.
        #[arg(long, requires = "s3_data_dir")]
        s3_endpoint: Option<String>,
        /// The directory the S3 server serves (one top-level directory per bucket).
        #[arg(long, requires = "s3_endpoint")]
        s3_data_dir: Option<PathBuf>,
        #[arg(long, default_value = "bench")]
        s3_bucket: String,
    },
    /// Time the manifest rewrite of a synthetic table of many entries.
    RewriteManifests(icemaint::bench::manifests::ManifestsOptions),
    /// Time snapshot expiry (older than now, retain the last 1) of a synthetic long history.
    Expire(icemaint::bench::expire::ExpireBenchOptions),
    /// A TCP proxy adding latency in front of a local server (bench/run.sh --s3-latency-ms):
    /// prints its port, forwards until SIGTERM, then prints its counts as JSON on stderr.
    LatencyProxy {
        /// The server to forward to (a loopback address).
        #[arg(long)]
        upstream: std::net::SocketAddr,
        /// Added round-trip time: each direction is delayed by half of it.
        #[arg(long)]
        latency_ms: f64,
        /// Address to listen on (a loopback address; port 0: a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Also write the counts (JSON) into this file when stopped.
        #[arg(long)]
        log: Option<PathBuf>,
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
        return cli::check(config);
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
        Command::Serve { config } => cli::serve(&config).await,
        Command::Tables { config, json } => cli::tables(&config, json).await,
        Command::Compact {
            table,
            config,
            dry_run,
            mut options,
            engine,
            json,
        } => {
            // The engine travels with the run's overrides (as `"engine"` does in the API body).
            options.extend(engine.map(|e| format!("engine={e}")));
            cli::compact(&config, &table, dry_run, &options, json).await
        }
        Command::RewriteManifests {
            table,
            config,
            json,
        } => cli::rewrite_manifests(&config, &table, json).await,
        Command::Expire {
            table,
            config,
            older_than,
            retain_last,
            dry_run,
            json,
        } => {
            let (older, retain) = (older_than.as_deref(), retain_last.as_deref());
            cli::expire(&config, &table, older, retain, dry_run, json).await
        }
        Command::RemoveOrphans {
            table,
            config,
            dry_run,
            older_than,
            force,
            json,
        } => {
            let older = older_than.as_deref();
            cli::remove_orphans(&config, &table, dry_run, older, force, json).await
        }
        Command::Demo {
            dir,
            listen,
            policies,
            setup_only,
        } => cli::demo(&dir, &listen, policies.as_deref(), setup_only).await,
        Command::Simulate {
            policy,
            options,
            files_per_tick,
            file_size,
            partitions_per_tick,
            ticks_per_day,
            days,
            compact_every,
            tick,
            json,
        } => {
            let scenario = icemaint::compaction::simulate::Scenario {
                files_per_tick,
                file_size_bytes: file_size,
                partitions_per_tick,
                ticks_per_day,
                days,
                compact_every_ticks: compact_every,
                tick_seconds: 0,
            };
            let args = cli::simulate::Args {
                policy: policy.as_deref(),
                options: &options,
                tick: &tick,
                json,
            };
            cli::simulate::run(scenario, args)
        }
        Command::Bench(bench) => run_bench(bench).await,
        Command::Check { .. } => unreachable!("handled before the runtime starts"),
    }
}

/// The `bench` subcommands (kept apart from [`run`] so each fits a screen).
async fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Limit {
            input,
            output,
            threads,
            batch_size,
            properties,
            dictionary,
        } => cli::bench::limit(input, output, threads, batch_size, &properties, dictionary).await,
        BenchCommand::Plan(opts) => cli::bench::plan(opts).await,
        BenchCommand::RemoveOrphans {
            objects,
            orphans,
            partitions,
            commits,
            dir,
            s3_endpoint,
            s3_data_dir,
            s3_bucket,
        } => {
            let s3 = s3_endpoint.zip(s3_data_dir).map(|(endpoint, data_dir)| {
                icemaint::bench::orphans::S3Dir {
                    endpoint,
                    data_dir,
                    bucket: s3_bucket,
                    access_key: std::env::var(icemaint::bench::orphans::S3_ACCESS_KEY_ENV)
                        .unwrap_or_default(),
                    secret_key: std::env::var(icemaint::bench::orphans::S3_SECRET_KEY_ENV)
                        .unwrap_or_default(),
                }
            });
            let opts = icemaint::bench::orphans::OrphansOptions {
                objects,
                orphans,
                partitions,
                commits,
                dir,
                s3,
            };
            cli::bench::orphans(opts).await
        }
        BenchCommand::RewriteManifests(opts) => cli::bench::manifests(opts).await,
        BenchCommand::Expire(opts) => cli::bench::expire(opts).await,
        BenchCommand::LatencyProxy {
            upstream,
            latency_ms,
            listen,
            log,
        } => cli::bench::latency_proxy(listen, upstream, latency_ms, log).await,
    }
}
