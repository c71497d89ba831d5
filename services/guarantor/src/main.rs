//! `guarantor`: one binary that runs any part of the system (`ingress`, `ledger`, `scanner`, `sweeper`,
//! `devnet`), all of them at once (`up`), or an operator command (`migrate`, `streams apply`, `apikey`,
//! `replay`, `dlq`, `reconcile`).

mod apikey;
mod bench;
mod chaos;
mod health;
mod infra;
mod ops;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use guarantor_config::Config;

/// Every service allocates per message (JSON, NATS and HTTP buffers) on several threads; under load
/// glibc's allocator spent a third of the ingress's CPU and a fifth of the ledger's (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "guarantor", version, about = "Self-hosted escrow over USDT on TRON")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process (ingress, ledger, scanner, sweeper and, unless a TRON node is
    /// configured, the devnet); creates the database, applies migrations and streams, and prints
    /// dev API keys on first start.
    Up(run::UpArgs),
    /// The HTTP ingress only.
    Ingress,
    /// The ledger consumer only.
    Ledger,
    /// The payment scanner only.
    Scanner,
    /// The sweeper only.
    Sweeper,
    /// The TRON devnet only (needs neither Postgres nor NATS).
    Devnet(run::DevnetArgs),
    /// Applies the database migrations.
    Migrate,
    /// JetStream stream definitions.
    Streams {
        #[command(subcommand)]
        command: StreamsCommand,
    },
    /// Tenants' API keys.
    Apikey {
        #[command(subcommand)]
        command: apikey::ApikeyCommand,
    },
    /// Re-drives stored commands through the ledger's handlers; replaying everything changes nothing.
    Replay(ops::ReplayArgs),
    /// Messages that could not be processed.
    Dlq {
        #[command(subcommand)]
        command: ops::DlqCommand,
    },
    /// Sweeps of deposit addresses to the main wallet.
    Sweeps {
        #[command(subcommand)]
        command: ops::SweepsCommand,
    },
    /// Checks the ledger's invariants from the database, and invariant 5 against the chain.
    Reconcile(ops::ReconcileArgs),
    /// Measures the full path against pgbench and JetStream baselines of the same run (SPEC §11).
    Bench(bench::BenchArgs),
    /// Measures the scanner: a balance-check cycle and the block follower over planted deposits on a
    /// rate-limited devnet (SPEC §11).
    BenchScanner(bench::scanner::ScannerBenchArgs),
    /// The fault run: a system of its own under keyed load while each process kind is killed with
    /// SIGKILL and restarted in turn; prints requests sent, acknowledged, lost and doubled.
    Chaos(chaos::ChaosArgs),
}

#[derive(Debug, Subcommand)]
enum StreamsCommand {
    /// Creates missing streams and updates existing ones to the definitions in nats/streams.json.
    Apply,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "stopped with an error");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => run::up(config, args).await,
        Command::Ingress => run::single(config, run::Part::Ingress).await,
        Command::Ledger => run::single(config, run::Part::Ledger).await,
        Command::Scanner => run::single(config, run::Part::Scanner).await,
        Command::Sweeper => run::single(config, run::Part::Sweeper).await,
        Command::Devnet(args) => run::devnet(config, args).await,
        Command::Migrate => {
            let pool = infra::postgres(&config, 2).await?;
            guarantor_store::migrate(&pool).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Streams {
            command: StreamsCommand::Apply,
        } => {
            let nats = infra::nats(&config, "streams").await?;
            let applied =
                guarantor_messaging::apply_streams(&guarantor_messaging::jetstream(&nats), config.stream_replicas)
                    .await?;
            eprintln!("streams applied: {}", applied.join(", "));
            Ok(())
        }
        Command::Apikey { command } => apikey::run(&config, command).await,
        Command::Replay(args) => ops::replay(&config, args).await,
        Command::Dlq { command } => ops::dlq(&config, command).await,
        Command::Reconcile(args) => ops::reconcile(&config, args).await,
        Command::Sweeps { command } => ops::sweeps(&config, command).await,
        Command::Bench(args) => bench::run(config, args).await,
        Command::BenchScanner(args) => bench::scanner::run(config, args).await,
        Command::Chaos(args) => chaos::run(args).await,
    }
}
