//! The devnet's persistence: an append-only log of what changed the chain (each block produced, with
//! the transactions it was given in order, and each reorganisation), and a snapshot of the whole chain
//! every [`SNAPSHOT_EVERY`] changes and at shutdown. A restart loads the snapshot and replays the log
//! after it; a replayed block must come out with the id it had, or the state is refused as
//! inconsistent. The chain is never rewritten whole on every block.
//!
//! Transactions broadcast but not yet in a block when the devnet stops are not kept (like a node's
//! memory pool).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::chain::{Chain, TxRecord};

/// Changes between two snapshots.
pub const SNAPSHOT_EVERY: u64 = 200;

/// One change of the chain, as the log keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// A block produced at `now_ms` from `pending` (signed transactions, hex, in order), with the id
    /// it got.
    Block {
        seq: u64,
        now_ms: i64,
        pending: Vec<String>,
        id: String,
    },
    Reorg {
        seq: u64,
        depth: i64,
        now_ms: i64,
    },
}

impl Change {
    fn seq(&self) -> u64 {
        match self {
            Change::Block { seq, .. } | Change::Reorg { seq, .. } => *seq,
        }
    }
}

/// Where a chain is kept: `<state file>` (the snapshot) and `<state file>.log`.
#[derive(Debug)]
pub struct Store {
    snapshot: PathBuf,
    log: File,
    since_snapshot: u64,
}

fn log_path(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.as_os_str().to_owned();
    name.push(".log");
    PathBuf::from(name)
}

/// Applies a logged change to `chain`.
fn replay(chain: &mut Chain, change: &Change) -> anyhow::Result<()> {
    match change {
        Change::Block {
            now_ms, pending, id, ..
        } => {
            let mut txids = Vec::with_capacity(pending.len());
            for bytes in pending {
                let record = TxRecord {
                    bytes: bytes.clone(),
                    block: None,
                    receipt: None,
                };
                let txid = record.txid().context("a logged transaction does not decode")?;
                chain.txs.insert(txid.clone(), record);
                txids.push(txid);
            }
            chain.pending = txids;
            chain.produce_block(*now_ms);
            anyhow::ensure!(
                chain.head().id == *id,
                "block {} replays to another block than was logged",
                chain.head().number
            );
        }
        Change::Reorg { depth, now_ms, .. } => {
            chain
                .reorg(*depth, *now_ms)
                .map_err(|refused| anyhow::anyhow!("a logged reorganisation replays refused: {}", refused.0))?;
        }
    }
    chain.changes = change.seq();
    Ok(())
}

impl Store {
    /// Loads the chain kept at `snapshot` (and its log), or `genesis` when nothing is kept there.
    pub fn open(snapshot: &Path, genesis: impl FnOnce() -> Chain) -> anyhow::Result<(Chain, Self)> {
        let fresh = !snapshot.exists();
        let mut chain = if !fresh {
            let text = std::fs::read_to_string(snapshot)
                .with_context(|| format!("cannot read devnet state {}", snapshot.display()))?;
            serde_json::from_str(&text).with_context(|| format!("devnet state {} is corrupt", snapshot.display()))?
        } else {
            genesis()
        };
        let log_path = log_path(snapshot);
        let mut replayed = 0;
        if log_path.exists() {
            let file = File::open(&log_path).with_context(|| format!("cannot read {}", log_path.display()))?;
            for (number, line) in BufReader::new(file).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let change: Change = match serde_json::from_str(&line) {
                    Ok(change) => change,
                    // A line cut by a crash while it was written: everything before it is kept.
                    Err(_) => {
                        tracing::warn!(line = number + 1, path = %log_path.display(), "devnet log ends in a partial line");
                        break;
                    }
                };
                // Changes the snapshot already holds (written before the log was truncated).
                if change.seq() <= chain.changes {
                    continue;
                }
                replay(&mut chain, &change).with_context(|| format!("{} line {}", log_path.display(), number + 1))?;
                replayed += 1;
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot write {}", log_path.display()))?;
        let mut store = Self {
            snapshot: snapshot.to_path_buf(),
            log,
            since_snapshot: replayed,
        };
        // A new chain is snapshotted at once: its genesis (made now) is what the log builds on.
        if fresh || replayed > 0 {
            store.snapshot(&chain)?;
        }
        Ok((chain, store))
    }

    /// Appends `change` (already applied to `chain`), and snapshots when enough have gathered.
    pub fn record(&mut self, chain: &Chain, change: &Change) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(change)?;
        line.push(b'\n');
        self.log.write_all(&line)?;
        self.log.flush()?;
        self.since_snapshot += 1;
        if self.since_snapshot >= SNAPSHOT_EVERY {
            self.snapshot(chain)?;
        }
        Ok(())
    }

    /// Writes the whole chain (to a temporary file, then renamed over the snapshot) and empties the
    /// log it now holds.
    pub fn snapshot(&mut self, chain: &Chain) -> anyhow::Result<()> {
        let partial = self.snapshot.with_extension("partial");
        std::fs::write(&partial, serde_json::to_vec(chain)?)?;
        std::fs::rename(&partial, &self.snapshot)?;
        self.log.set_len(0)?;
        self.since_snapshot = 0;
        Ok(())
    }
}
