//! The `icemaint` binary: parses the command line and hands over to [`icemaint::app`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    icemaint::telemetry::init_logging();
    let cli = Cli::parse();
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
        Command::Demo {
            dir,
            listen,
            policies,
            setup_only,
        } => icemaint::demo::run(&dir, &listen, &policies, setup_only).await,
        Command::Check { .. } => unreachable!("handled before the runtime starts"),
    }
}
