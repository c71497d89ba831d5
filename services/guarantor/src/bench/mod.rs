//! `guarantor bench`: the throughput, latency and memory benchmark of SPEC §11. It starts its own
//! system (each service as its own process, on a scratch database and a nats-server of its own) or
//! drives a running one, runs the deal lifecycle at several client counts, and prints the numbers
//! next to the baselines measured in the same run on the same servers: `pgbench` with a 3-statement
//! transfer at 16 clients (before and after the full path, since a shared machine's speed drifts
//! within minutes), and JetStream's synchronous and pipelined publish rates.

#![allow(clippy::print_stdout, reason = "the benchmark's report is its output")]
#![allow(clippy::float_arithmetic, reason = "ratios of a benchmark report, never money")]

mod baselines;
mod load;
pub(crate) mod own;
pub mod scanner;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use guarantor_config::Config;
use serde::Serialize;

use load::{PhaseReport, Target};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Drive the system running at this base URL (e.g. http://127.0.0.1:8080) instead of starting one
    #[arg(long)]
    url: Option<String>,
    /// The running system's API keys, as `guarantor up` keeps them ({"platform", "arbiter", "admin"})
    #[arg(long, default_value = ".guarantor/dev-api-keys.json")]
    keys: PathBuf,
    /// Seconds each client count runs (and each baseline)
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Client counts, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Open deals created before the services' memory is read (own system only)
    #[arg(long, default_value_t = 10_000)]
    open_deals: usize,
    /// Workers of the benchmark's own ledger (own system only; default: GUARANTOR_LEDGER_WORKERS, 2)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    ledger_workers: Option<u64>,
    /// Print the report as JSON (to compare commits)
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    pgbench: baselines::PgbenchReport,
    /// pgbench again, after the full path's phases.
    pgbench_after: baselines::PgbenchReport,
    jetstream: baselines::JetStreamReport,
    phases: Vec<PhaseReport>,
    /// Commands per second of each phase over the mean of the two pgbench runs' transactions per second.
    ratios_to_pgbench: Vec<(usize, f64)>,
    open_deals: Option<usize>,
    /// Workers of the benchmark's own ledger (none when it drives a running system).
    ledger_workers: Option<u64>,
    /// Resident memory of each service, in MB, with the open deals in place.
    rss_mb: Vec<(String, f64)>,
}

pub async fn run(config: Config, args: BenchArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?;
    let (target, system) = match &args.url {
        Some(url) => {
            anyhow::ensure!(
                args.ledger_workers.is_none(),
                "--ledger-workers sets the benchmark's own ledger; a running system keeps its own setting"
            );
            let keys: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&args.keys)
                    .with_context(|| format!("cannot read the API keys in {}", args.keys.display()))?,
            )?;
            let key = |role: &str| {
                keys[role]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("{} has no {role} key", args.keys.display()))
            };
            let target = Target {
                base: url.trim_end_matches('/').to_owned(),
                platform: key("platform")?,
                arbiter: key("arbiter")?,
                admin: key("admin")?,
                http,
            };
            (target, None)
        }
        None => {
            eprintln!("starting a system of the benchmark's own, on a scratch database...");
            let workers = args.ledger_workers.unwrap_or(config.ledger_workers);
            let system = own::System::start(&config, workers).await?;
            let target = system.target(http).await?;
            (target, Some(system))
        }
    };
    let nats_url = system
        .as_ref()
        .map_or_else(|| config.nats_url.clone(), |system| system.nats_url());
    let nats = guarantor_messaging::connect_once(&nats_url, "bench").await?;
    let duration = Duration::from_secs(args.seconds.max(1));

    eprintln!(
        "baseline: pgbench, 3-statement transfer, 16 clients, {}s...",
        duration.as_secs()
    );
    let pgbench_database = own::scratch_name(&config, "pgbench")?;
    let pgbench = baselines::pgbench(&config.database_url, &pgbench_database, 16, duration).await?;
    eprintln!("baseline: JetStream publish, {}s...", duration.as_secs());
    let jetstream = baselines::jetstream(&nats, duration).await?;

    let most = args.clients.iter().copied().max().unwrap_or(1);
    let mut pairs = Vec::with_capacity(most);
    for client in 0..most {
        pairs.push(
            target
                .pair(&format!("{}-{client}", uuid::Uuid::new_v4().simple()))
                .await?,
        );
    }
    let mut phases = Vec::new();
    for &clients in &args.clients {
        eprintln!("full path: {clients} clients, {}s...", duration.as_secs());
        phases.push(load::phase(&target, &pairs, clients.max(1), duration).await);
    }
    eprintln!("baseline again: pgbench, {}s...", duration.as_secs());
    let pgbench_after = baselines::pgbench(&config.database_url, &pgbench_database, 16, duration).await?;
    let pgbench_tps = (pgbench.tps + pgbench_after.tps) / 2.0;
    let (open_deals, rss_mb) = match &system {
        Some(system) => {
            eprintln!("creating {} open deals...", args.open_deals);
            let created = open_deals(&target, &pairs, args.open_deals).await?;
            (Some(created), system.rss_mb())
        }
        None => (None, Vec::new()),
    };
    let report = Report {
        ratios_to_pgbench: phases
            .iter()
            .map(|phase| (phase.clients, phase.commands_per_sec / pgbench_tps))
            .collect(),
        pgbench,
        pgbench_after,
        jetstream,
        phases,
        open_deals,
        ledger_workers: system.as_ref().map(|system| system.ledger_workers),
        rss_mb,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    if let Some(system) = system {
        system.stop().await;
    }
    Ok(())
}

async fn open_deals(target: &Target, pairs: &[(i64, i64)], count: usize) -> anyhow::Result<usize> {
    let workers = 64.min(count.max(1));
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let target = target.clone();
        let (customer, performer) = pairs[worker % pairs.len()];
        let share = count / workers + usize::from(worker < count % workers);
        tasks.push(tokio::spawn(async move {
            let mut created = 0;
            for _ in 0..share {
                if target.open_deal(customer, performer).await? {
                    created += 1;
                }
            }
            anyhow::Ok(created)
        }));
    }
    let mut created = 0;
    for task in tasks {
        created += task.await??;
    }
    Ok(created)
}

fn print(report: &Report) {
    println!("baselines (same run, same servers)");
    println!(
        "  pgbench 3-statement transfer, {} clients: {:.0} tps before the full path, {:.0} after (×pgbench: their mean)",
        report.pgbench.clients, report.pgbench.tps, report.pgbench_after.tps
    );
    println!(
        "  JetStream publish: {:.0}/s synchronous, {:.0}/s pipelined",
        report.jetstream.sync_per_sec, report.jetstream.pipelined_per_sec
    );
    println!();
    println!("full path HTTP → JetStream → ledger → Postgres → reply (create, confirm, close; 10% disputes)");
    if let Some(workers) = report.ledger_workers {
        println!("  the benchmark's own system, {workers} ledger workers");
    }
    println!(
        "  {:>7} {:>10} {:>11} {:>8} {:>10} {:>8} {:>12}  latency p50/p95/p99 ms by route",
        "clients", "commands/s", "lifecycles/s", "×pgbench", "errors", "gen CPU", "CPU/command"
    );
    for (phase, (_, ratio)) in report.phases.iter().zip(&report.ratios_to_pgbench) {
        let errors: usize = phase.errors.values().sum();
        let routes: Vec<String> = phase
            .routes
            .iter()
            .map(|(route, r)| format!("{route} {:.1}/{:.1}/{:.1}", r.p50_ms, r.p95_ms, r.p99_ms))
            .collect();
        println!(
            "  {:>7} {:>10.0} {:>11.0} {:>7.2}× {:>10} {:>7.0}% {:>9.0} µs  {}",
            phase.clients,
            phase.commands_per_sec,
            phase.lifecycles_per_sec,
            ratio,
            errors,
            phase.generator_cpu_percent,
            phase.machine_cpu_us_per_command,
            routes.join(", ")
        );
        for (error, count) in &phase.errors {
            println!("          error: {error} × {count}");
        }
    }
    if let Some(open) = report.open_deals {
        println!();
        println!("memory with {open} open deals (RSS):");
        for (service, mb) in &report.rss_mb {
            println!("  {service:<8} {mb:>6.1} MB");
        }
    }
    println!();
    println!("targets (SPEC §11):");
    let best = report
        .ratios_to_pgbench
        .iter()
        .map(|(_, ratio)| *ratio)
        .fold(0.0_f64, f64::max);
    println!("  full path ≥ 1.0× pgbench: {best:.2}× {}", verdict(best >= 1.0));
    if let Some(phase) = report.phases.iter().find(|phase| phase.clients == 64) {
        let p99 = phase.routes.get("create").map_or(f64::NAN, |r| r.p99_ms);
        println!(
            "  create p99 ≤ 25 ms at 64 clients: {p99:.1} ms {}",
            verdict(p99 <= 25.0)
        );
    }
    if !report.rss_mb.is_empty() {
        let most = report.rss_mb.iter().map(|(_, mb)| *mb).fold(0.0_f64, f64::max);
        println!(
            "  every service < 100 MB RSS: {most:.1} MB at most {}",
            verdict(most < 100.0)
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "(met)"
    } else {
        "(MISSED)"
    }
}
