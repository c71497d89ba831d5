//! The baselines the full path is compared against, measured in the same run on the same servers:
//! `pgbench` running a 3-statement transfer, and JetStream publishing synchronously and pipelined.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use guarantor_config::{ExposeSecret, SecretString};
use serde::Serialize;

/// The transfer pgbench runs: two balance updates and a history row in one transaction.
const TRANSFER_SCRIPT: &str = "\\set a random(1, 100000 * :scale)
\\set b random(1, 100000 * :scale)
\\set delta random(1, 1000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance - :delta WHERE aid = :a;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :b;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :a, :delta, CURRENT_TIMESTAMP);
END;
";

#[derive(Debug, Clone, Serialize)]
pub struct PgbenchReport {
    pub clients: usize,
    pub tps: f64,
}

/// A database URL naming `database` on the same server.
pub fn with_database(url: &SecretString, database: &str) -> anyhow::Result<String> {
    let mut parsed = reqwest::Url::parse(url.expose_secret()).context("GUARANTOR_DATABASE_URL is not a URL")?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

/// `pgbench` with the transfer script at `clients` clients for `duration`, on the scratch database
/// `database` (created, and dropped afterwards).
pub async fn pgbench(
    server_url: &SecretString,
    database: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<PgbenchReport> {
    let url = with_database(server_url, database)?;
    guarantor_store::ensure_database(&SecretString::from(url.clone())).await?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("transfer.sql");
    std::fs::write(&script, TRANSFER_SCRIPT)?;
    let init = tokio::process::Command::new("pgbench")
        .args(["-i", "-q", "-s", "1", &url])
        .output()
        .await
        .context("pgbench is not installed (Debian: postgresql-client or postgresql)")?;
    anyhow::ensure!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    // Both runs start from a clean checkpoint, so the one after the full path does not pay for
    // flushing the pages the full path dirtied (CHECKPOINT needs a superuser or pg_checkpoint).
    let admin = guarantor_store::connect(&with_database(server_url, "postgres")?.into(), 1).await?;
    if let Err(err) = sqlx::query("CHECKPOINT").execute(&admin).await {
        eprintln!("pgbench starts without a checkpoint: {err}");
    }
    let run = tokio::process::Command::new("pgbench")
        .args(["-n", "-c", &clients.to_string(), "-j", "2", "-T"])
        .arg(duration.as_secs().max(1).to_string())
        .arg("-f")
        .arg(&script)
        .arg(&url)
        .output()
        .await?;
    super::own::drop_database(&admin, database).await?;
    let output = String::from_utf8_lossy(&run.stdout);
    anyhow::ensure!(
        run.status.success(),
        "pgbench failed: {output}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let tps = output
        .lines()
        .find(|line| line.starts_with("tps = "))
        .and_then(|line| line.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|number| number.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench's output: {output}"))?;
    Ok(PgbenchReport { clients, tps })
}

#[derive(Debug, Clone, Serialize)]
pub struct JetStreamReport {
    /// Publishes per second, each awaiting its ack before the next.
    pub sync_per_sec: f64,
    /// Publishes per second with up to 256 acks outstanding.
    pub pipelined_per_sec: f64,
}

/// JetStream publish rates on a scratch stream of the same server (file storage, like the command
/// stream), with 300-byte messages (about a command's size).
#[allow(clippy::float_arithmetic, reason = "rates of a benchmark report, never money")]
pub async fn jetstream(nats: &guarantor_messaging::Client, duration: Duration) -> anyhow::Result<JetStreamReport> {
    let js = guarantor_messaging::jetstream(nats);
    let name = format!("GUARANTOR_BENCH_{}", uuid::Uuid::new_v4().simple());
    let subject = format!("bench.{}", name.to_lowercase());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{subject}.>")],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let payload = Bytes::from(vec![b'x'; 300]);
    let measure = async {
        let started = Instant::now();
        let mut sync = 0u64;
        while started.elapsed() < duration / 2 {
            js.publish(format!("{subject}.sync"), payload.clone()).await?.await?;
            sync += 1;
        }
        let sync_per_sec = sync as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut pipelined = 0u64;
        let mut window = std::collections::VecDeque::new();
        while started.elapsed() < duration / 2 {
            window.push_back(js.publish(format!("{subject}.pipelined"), payload.clone()).await?);
            if window.len() >= 256 {
                if let Some(ack) = window.pop_front() {
                    ack.await?;
                    pipelined += 1;
                }
            }
        }
        for ack in window {
            ack.await?;
            pipelined += 1;
        }
        let pipelined_per_sec = pipelined as f64 / started.elapsed().as_secs_f64();
        anyhow::Ok(JetStreamReport {
            sync_per_sec,
            pipelined_per_sec,
        })
    }
    .await;
    js.delete_stream(&name).await?;
    measure
}
