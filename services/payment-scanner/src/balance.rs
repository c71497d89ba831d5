//! The balance check, the original flow's detector kept as a slower safety net: for each watched
//! address (open payments, and done or expired ones within the grace period) it reads the
//! solidified token balance; where coins are there that no credited deposit accounts for, it lists
//! the address's confirmed transfers (TronGrid, every page, this token only) and confirms each one
//! not yet credited with the solidified receipt, which alone is credited. Its cost grows with the
//! watched addresses (one request each, plus a few where coins are unaccounted), which is why the
//! block follower is the default detector.

use std::collections::HashSet;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use guarantor_domain::{PaymentId, TenantId};
use guarantor_messaging::JetStream;
use guarantor_tron::solid::SolidReader;
use guarantor_tron::TronAddress;
use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::follower::ScanError;
use crate::lease::Lease;
use crate::observe::{self, ObserveError, Watched};

/// The balance check's lease in `scanner_leases`.
pub const BALANCE_CHECK: &str = "balance_check";

/// Requests in flight at once (the node client's rate limit still applies).
const CONCURRENCY: usize = 8;

/// What one balance check did and cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    pub addresses: usize,
    /// Addresses holding coins no credited deposit accounts for.
    pub unaccounted: usize,
    pub deposits: usize,
    pub requests: u64,
}

#[derive(Debug, Clone)]
pub struct BalanceCheck {
    pub pool: PgPool,
    pub js: JetStream,
    pub reader: SolidReader,
    pub lease: Lease,
    /// How long a done or expired payment's address stays watched.
    pub grace: Duration,
}

struct Candidate {
    watched: Watched,
    /// Credited so far, in base units.
    credited: u64,
}

impl BalanceCheck {
    pub fn new(pool: PgPool, js: JetStream, reader: SolidReader, lease_ttl: Duration, grace: Duration) -> Self {
        Self {
            pool,
            js,
            reader,
            lease: Lease::new(BALANCE_CHECK, lease_ttl),
            grace,
        }
    }

    /// One pass over the watched addresses; `None` when another scanner holds the lease.
    pub async fn cycle(&self) -> Result<Option<Check>, ScanError> {
        if !self.lease.acquire(&self.pool).await? {
            return Ok(None);
        }
        let requests_before = self.reader.requests();
        let watched = self.watched().await?;
        let mut check = Check {
            addresses: watched.len(),
            ..Check::default()
        };
        let unaccounted: Vec<Candidate> = stream::iter(watched)
            .map(|candidate| async move {
                let address = address_of(&candidate.watched)?;
                let balance = self.reader.token_balance(&address).await?;
                if balance < candidate.credited {
                    // Swept coins are not subtracted yet (no sweeps exist before the sweeper issue).
                    tracing::warn!(
                        payment_id = %candidate.watched.payment_id,
                        balance,
                        credited = candidate.credited,
                        "a deposit address holds less than was credited to it"
                    );
                }
                Ok::<_, ScanError>((balance > candidate.credited).then_some(candidate))
            })
            .buffer_unordered(CONCURRENCY)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await?;
        check.unaccounted = unaccounted.len();
        for candidate in &unaccounted {
            check.deposits += self.find_deposits(&candidate.watched).await?;
            if !self.lease.acquire(&self.pool).await? {
                return Err(ScanError::LostLease);
            }
        }
        check.requests = self.reader.requests() - requests_before;
        Ok(Some(check))
    }

    async fn watched(&self) -> Result<Vec<Candidate>, ScanError> {
        let grace = self.grace.as_secs_f64();
        let rows = sqlx::query!(
            r#"SELECT p.id AS "payment_id: PaymentId", p.tenant_id AS "tenant_id: TenantId", p.address,
                      COALESCE((SELECT sum(d.amount) FROM deposits d WHERE d.payment_id = p.id), 0) AS "credited!"
               FROM payments p
               WHERE p.status IN ('waiting', 'partial') OR p.updated_at > now() - make_interval(secs => $1)
               ORDER BY p.id"#,
            grace,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Candidate {
                    credited: base_units(row.credited)?,
                    watched: Watched {
                        payment_id: row.payment_id,
                        tenant_id: row.tenant_id,
                        address: row.address,
                    },
                })
            })
            .collect()
    }

    /// Publishes every solidified, not yet credited transfer of the token to the payment's address.
    async fn find_deposits(&self, payment: &Watched) -> Result<usize, ScanError> {
        let address = address_of(payment)?;
        let credited: HashSet<(String, u32)> = sqlx::query!(
            "SELECT txid, log_index FROM deposits WHERE payment_id = $1",
            payment.payment_id.get()
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .filter_map(|row| u32::try_from(row.log_index).ok().map(|index| (row.txid, index)))
        .collect();
        let listed = self.reader.listed_transfers_to(&address).await?;
        let txids: HashSet<String> = listed
            .into_iter()
            .filter(|t| t.token == *self.reader.token() && t.to == address)
            .map(|t| t.txid)
            .collect();
        let mut published = 0;
        for txid in txids {
            // The listing only names candidates: the solidified receipt decides.
            let Some(transfers) = self.reader.transaction(&txid).await? else {
                continue;
            };
            for transfer in transfers.iter().filter(|t| t.to == address && t.amount > 0) {
                if credited.contains(&(transfer.txid.clone(), transfer.log_index)) {
                    continue;
                }
                observe::publish_deposit(&self.js, BALANCE_CHECK, payment, self.reader.token(), transfer).await?;
                published += 1;
            }
        }
        Ok(published)
    }
}

fn address_of(payment: &Watched) -> Result<TronAddress, ScanError> {
    payment.address.parse().map_err(|_| {
        ScanError::Observe(ObserveError::Malformed(format!(
            "payment {} address",
            payment.payment_id
        )))
    })
}

/// A credited amount in base units.
fn base_units(amount: Decimal) -> Result<u64, ScanError> {
    guarantor_domain::Currency::Usdt
        .to_base_units(amount)
        .ok_or_else(|| ObserveError::Malformed(format!("credited {amount} is not a USDT amount in base units")).into())
}
