//! Operator commands: `replay`, `dlq list|redrive`, `reconcile`.

#![allow(clippy::print_stdout, reason = "these commands print their results")]

use std::time::Duration;

use clap::{Args, Subcommand};
use guarantor_config::Config;
use guarantor_ledger::dlq::Redriven;
use guarantor_ledger::replay::{self, ReplayStart};
use guarantor_messaging::COMMAND_STREAM;

use crate::infra;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("start").required(true).args(["from_seq", "from_time"])))]
pub struct ReplayArgs {
    /// The stream to replay; only GUARANTOR_CMD has handlers (events are outputs, not inputs).
    #[arg(long, default_value = COMMAND_STREAM)]
    stream: String,
    /// First stream sequence to replay.
    #[arg(long)]
    from_seq: Option<u64>,
    /// Replay messages stored at or after this RFC 3339 time.
    #[arg(long)]
    from_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Last stream sequence to replay (inclusive).
    #[arg(long)]
    to_seq: Option<u64>,
    /// Only messages on subjects matching this filter, e.g. guarantor.cmd.deal.>
    #[arg(long)]
    subject: Option<String>,
    /// Count what a replay would apply and what is applied already, changing nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Lists the dead-lettered messages with their errors.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Publishes dead-lettered messages back to their original subjects, removes them from the DLQ
    /// and reports what the ledger made of each.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Redrive {
        /// DLQ sequence of a message to re-drive (repeat for several).
        #[arg(long)]
        id: Vec<u64>,
        /// Re-drive every message in the DLQ.
        #[arg(long)]
        all: bool,
        /// How long to wait for each message's verdict.
        #[arg(long, default_value_t = 15)]
        wait_secs: u64,
    },
}

pub async fn replay(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.stream == COMMAND_STREAM,
        "only {COMMAND_STREAM} can be replayed: it holds the commands the ledger applies"
    );
    let start = match (args.from_seq, args.from_time) {
        (Some(sequence), _) => ReplayStart::Sequence(sequence),
        (None, Some(time)) => ReplayStart::Time(time),
        (None, None) => anyhow::bail!("give --from-seq or --from-time"),
    };
    let pool = infra::postgres(config, 2).await?;
    let nats = infra::nats(config, "replay").await?;
    let js = guarantor_messaging::jetstream(&nats);
    let report = replay::replay(&pool, &js, start, args.to_seq, args.subject, args.dry_run).await?;
    let verb = if args.dry_run { "would replay" } else { "replayed" };
    println!(
        "{verb} {} messages (up to sequence {}): {} applied, {} refused, {} already decided, {} failed, \
         {} not commands",
        report.read,
        report.last_sequence,
        report.applied,
        report.refused,
        report.already_decided,
        report.failed,
        report.skipped
    );
    for (sequence, error) in &report.errors {
        println!("  sequence {sequence} failed: {error}");
    }
    Ok(())
}

pub async fn dlq(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    let nats = infra::nats(config, "dlq").await?;
    let js = guarantor_messaging::jetstream(&nats);
    match command {
        DlqCommand::List { json } => {
            let letters = guarantor_ledger::dlq::list(&js).await?;
            if json {
                println!("{}", serde_json::to_string(&letters)?);
            } else if letters.is_empty() {
                println!("the DLQ is empty");
            } else {
                println!(
                    "   seq  stored at                       from (subject #sequence)  deliveries  command  error"
                );
                for letter in letters {
                    println!(
                        "{:>6}  {}  {} #{}  {}  {}  {}",
                        letter.sequence,
                        letter.stored_at,
                        letter.original_subject.as_deref().unwrap_or("?"),
                        letter.original_sequence.as_deref().unwrap_or("?"),
                        letter.deliveries.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                        letter.command_id.map_or_else(|| "-".to_owned(), |id| id.to_string()),
                        letter.error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        DlqCommand::Redrive { id, all, wait_secs } => {
            let letters: Vec<_> = guarantor_ledger::dlq::list(&js)
                .await?
                .into_iter()
                .filter(|letter| all || id.contains(&letter.sequence))
                .collect();
            if let Some(missing) = id.iter().find(|&&seq| !letters.iter().any(|l| l.sequence == seq)) {
                anyhow::bail!("the DLQ holds no message {missing}");
            }
            let pool = infra::postgres(config, 2).await?;
            let mut failed_again = 0;
            for letter in &letters {
                let subject = guarantor_ledger::dlq::redrive(&js, letter.sequence).await?;
                let outcome = guarantor_ledger::dlq::follow(&js, &pool, letter, Duration::from_secs(wait_secs)).await?;
                let told = match outcome {
                    Redriven::Decided(outcome) => outcome,
                    Redriven::FailedAgain { sequence, error } => {
                        failed_again += 1;
                        format!("failed again (now DLQ message {sequence}): {error}")
                    }
                    Redriven::Undecided => {
                        format!("no verdict within {wait_secs} s (is a ledger running?); it waits in the stream")
                    }
                };
                println!("DLQ message {} → {subject}: {told}", letter.sequence);
            }
            println!("re-drove {} message(s), {failed_again} failed again", letters.len());
            anyhow::ensure!(failed_again == 0, "{failed_again} re-driven message(s) failed again");
        }
    }
    Ok(())
}

/// Checks invariants 1–4; exits non-zero when any is violated.
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Also check invariant 5 against the chain (on by default when GUARANTOR_TRON_NODE_URL is set;
    /// without it, the devnet at GUARANTOR_DEVNET_ADDR is asked)
    #[arg(long)]
    chain: bool,
}

pub async fn reconcile(config: &Config, args: ReconcileArgs) -> anyhow::Result<()> {
    let pool = infra::postgres(config, 2).await?;
    let violations = guarantor_ledger::reconcile::check(&pool).await?;
    for violation in &violations {
        println!("invariant {}: {}", violation.invariant, violation.detail);
    }
    if violations.is_empty() {
        println!("ok: invariants 1-4 hold");
    }
    let mut differences = 0;
    if args.chain || config.tron.node_url.is_some() {
        let node = crate::run::node_client(config)?;
        let reader = guarantor_tron::solid::SolidReader::new(node, config.tron.usdt_contract);
        let report = guarantor_sweeper::reconcile::against_chain(&pool, &reader).await?;
        for difference in &report.differences {
            println!(
                "invariant 5: {} (payment {}): credited {} but {} on chain + {} swept: {} missing{}",
                difference.address,
                difference.payment_id,
                difference.credited,
                difference.on_chain,
                difference.swept,
                difference.missing(),
                if difference.open_sweeps > 0 {
                    " (a sweep is in flight)"
                } else {
                    ""
                }
            );
        }
        println!(
            "chain: {} addresses, credited {} = on chain {} + swept {}: difference {}",
            report.addresses,
            report.credited,
            report.on_chain,
            report.swept,
            report.credited - report.on_chain - report.swept
        );
        differences = report.differences.len();
        if differences == 0 {
            println!("ok: invariant 5 holds");
        }
    }
    if violations.is_empty() && differences == 0 {
        return Ok(());
    }
    anyhow::bail!("{} violation(s) found", violations.len() + differences)
}

#[derive(Debug, Subcommand)]
pub enum SweepsCommand {
    /// Lists sweeps, newest first: address, amount, status, transactions, fee paid, last error.
    List {
        /// Only sweeps in this status (fee_check, topping_up, sending, confirmed, failed).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Sends a failed sweep back to its fee check, once its cause is fixed (e.g. the fee wallet funded).
    Retry { id: i64 },
}

pub async fn sweeps(config: &Config, command: SweepsCommand) -> anyhow::Result<()> {
    let pool = infra::postgres(config, 2).await?;
    match command {
        SweepsCommand::List { status, limit, json } => {
            let sweeps = guarantor_store::views::sweeps(&pool, status.as_deref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sweeps)?);
                return Ok(());
            }
            println!(
                "{:>6} {:>8} {:<34} {:>14} {:<10} {:>12} {:>8}  last error / transactions",
                "sweep", "payment", "address", "amount", "status", "fee paid", "attempts"
            );
            for sweep in sweeps {
                let txids: Vec<String> = sweep
                    .transactions
                    .as_array()
                    .map(|txs| {
                        txs.iter()
                            .map(|t| {
                                format!(
                                    "{}:{}:{}",
                                    t["kind"].as_str().unwrap_or("?"),
                                    t["txid"].as_str().unwrap_or("?"),
                                    t["status"].as_str().unwrap_or("?")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{:>6} {:>8} {:<34} {:>14} {:<10} {:>12} {:>8}  {}",
                    sweep.sweep_id,
                    sweep.payment_id,
                    sweep.address,
                    sweep.amount,
                    sweep.status,
                    sweep.fee_paid_sun,
                    sweep.attempts,
                    sweep.last_error.unwrap_or_else(|| txids.join(" "))
                );
            }
            Ok(())
        }
        SweepsCommand::Retry { id } => {
            anyhow::ensure!(
                guarantor_store::views::retry_sweep(&pool, id).await?,
                "sweep {id} is not a failed sweep"
            );
            println!("sweep {id} goes back to its fee check");
            Ok(())
        }
    }
}
