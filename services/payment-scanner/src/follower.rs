//! The block follower, the default detector: walks solidified blocks from a cursor kept in
//! Postgres and credits the token's `Transfer`s to any payment's address. Its cost grows with
//! blocks, not with watched addresses: the recipients of a chunk of blocks are looked up in one
//! query. It never reads past the solidified head, never moves its cursor past a block it has not
//! read completely and whose deposits are not published, and catches up chunk by chunk after an
//! outage.

use std::collections::HashMap;
use std::time::Duration;

use guarantor_domain::{PaymentId, TenantId};
use guarantor_messaging::JetStream;
use guarantor_tron::client::NodeError;
use guarantor_tron::solid::{SolidReader, SolidTransfer};
use sqlx::PgPool;

use crate::lease::Lease;
use crate::observe::{self, ObserveError, Watched};

/// The cursor's name in `scanner_cursors` (and the lease's in `scanner_leases`).
pub const FOLLOWER: &str = "block_follower";

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("node: {0}")]
    Node(#[from] NodeError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error("the lease was lost to another scanner; stopping this cycle")]
    LostLease,
}

/// What one cycle did and cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cycle {
    pub blocks: u64,
    pub transfers: usize,
    pub deposits: usize,
    pub expiries: usize,
    pub requests: u64,
    /// Solidified blocks not read yet when the cycle ended (0 when caught up).
    pub lag_blocks: u64,
}

#[derive(Debug, Clone)]
pub struct Follower {
    pub pool: PgPool,
    pub js: JetStream,
    pub reader: SolidReader,
    pub lease: Lease,
    /// Blocks read between two cursor moves.
    pub chunk: u64,
    /// Most blocks one cycle reads, so a long catch-up still reports and renews its lease.
    pub max_blocks: u64,
}

impl Follower {
    pub fn new(pool: PgPool, js: JetStream, reader: SolidReader, lease_ttl: Duration) -> Self {
        Self {
            pool,
            js,
            reader,
            lease: Lease::new(FOLLOWER, lease_ttl),
            chunk: 50,
            max_blocks: 2_000,
        }
    }

    /// One cycle; `None` when another scanner holds the lease.
    pub async fn cycle(&self) -> Result<Option<Cycle>, ScanError> {
        if !self.lease.acquire(&self.pool).await? {
            return Ok(None);
        }
        let requests_before = self.reader.requests();
        let head = self.reader.head().await?;
        let mut next = self.cursor(head).await?;
        let mut cycle = Cycle::default();
        while next <= head && cycle.blocks < self.max_blocks {
            let last = head.min(next + self.chunk - 1);
            let mut transfers = Vec::new();
            let mut read_until = None;
            for number in next..=last {
                let block = self.reader.block(number).await?;
                read_until = Some(block.time_ms);
                transfers.extend(block.transfers);
            }
            cycle.transfers += transfers.len();
            cycle.deposits += self.publish(&transfers).await?;
            if !self.lease.acquire(&self.pool).await? {
                return Err(ScanError::LostLease);
            }
            self.advance(last + 1, read_until).await?;
            cycle.blocks += last + 1 - next;
            next = last + 1;
        }
        cycle.expiries = self.expire().await?;
        cycle.lag_blocks = (head + 1).saturating_sub(next);
        cycle.requests = self.reader.requests() - requests_before;
        Ok(Some(cycle))
    }

    /// The next block to read; a first start begins at the solidified head.
    async fn cursor(&self, head: u64) -> Result<u64, ScanError> {
        let start = i64::try_from(head).map_err(|_| ObserveError::Malformed(format!("head {head}")))?;
        let next = sqlx::query_scalar!(
            r#"WITH created AS (
                   INSERT INTO scanner_cursors (name, next_block) VALUES ($1, $2)
                   ON CONFLICT (name) DO NOTHING RETURNING next_block)
               SELECT next_block AS "next!" FROM created
               UNION ALL SELECT next_block FROM scanner_cursors WHERE name = $1"#,
            FOLLOWER,
            start,
        )
        .fetch_one(&self.pool)
        .await?;
        if next == start {
            tracing::debug!(block = next, "block follower starts at the solidified head");
        }
        u64::try_from(next).map_err(|_| ScanError::Database(sqlx::Error::Decode("negative cursor".into())))
    }

    /// Moves the cursor to `next`, only while this process holds the lease.
    async fn advance(&self, next: u64, read_until_ms: Option<i64>) -> Result<(), ScanError> {
        let next = i64::try_from(next).map_err(|_| ObserveError::Malformed(format!("block {next}")))?;
        let read_until = read_until_ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis);
        let moved = sqlx::query!(
            "UPDATE scanner_cursors c SET next_block = $2, read_until = COALESCE($3, c.read_until), updated_at = now()
             WHERE c.name = $1 AND c.next_block < $2
               AND EXISTS (SELECT 1 FROM scanner_leases l
                           WHERE l.name = $1 AND l.holder = $4 AND l.expires_at > now())",
            FOLLOWER,
            next,
            read_until,
            self.lease.holder,
        )
        .execute(&self.pool)
        .await?;
        if moved.rows_affected() == 0 {
            return Err(ScanError::LostLease);
        }
        Ok(())
    }

    /// Publishes an observation of every transfer to a payment's address; returns how many.
    async fn publish(&self, transfers: &[SolidTransfer]) -> Result<usize, ScanError> {
        let recipients: Vec<String> = transfers
            .iter()
            .filter(|t| t.amount > 0)
            .map(|t| t.to.to_base58())
            .collect();
        if recipients.is_empty() {
            return Ok(0);
        }
        let watched: HashMap<String, Watched> = sqlx::query!(
            r#"SELECT id AS "payment_id: PaymentId", tenant_id AS "tenant_id: TenantId", address
               FROM payments WHERE address = ANY($1)"#,
            &recipients,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| {
            (
                row.address.clone(),
                Watched {
                    payment_id: row.payment_id,
                    tenant_id: row.tenant_id,
                    address: row.address,
                },
            )
        })
        .collect();
        let mut published = 0;
        for transfer in transfers.iter().filter(|t| t.amount > 0) {
            let Some(payment) = watched.get(&transfer.to.to_base58()) else {
                continue;
            };
            observe::publish_deposit(&self.js, FOLLOWER, payment, self.reader.token(), transfer).await?;
            published += 1;
        }
        Ok(published)
    }

    /// Expires the waiting payments whose deadline lies before the last block read: nothing was
    /// mined for them in time (every earlier block has been read and its deposits published).
    async fn expire(&self) -> Result<usize, ScanError> {
        let due = sqlx::query!(
            r#"SELECT p.id AS "payment_id: PaymentId", p.tenant_id AS "tenant_id: TenantId"
               FROM payments p JOIN scanner_cursors c ON c.name = $1
               WHERE p.status = 'waiting' AND p.expires_at < c.read_until
               ORDER BY p.expires_at LIMIT 1000"#,
            FOLLOWER,
        )
        .fetch_all(&self.pool)
        .await?;
        for payment in &due {
            observe::publish_expiry(&self.js, payment.tenant_id, payment.payment_id).await?;
        }
        Ok(due.len())
    }
}
