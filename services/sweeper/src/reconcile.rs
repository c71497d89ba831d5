//! Reconciliation with the chain (invariant 5): for every deposit address, the USDT credited to its
//! payment equals what the address holds in solidified state plus what confirmed sweeps moved away.

use guarantor_tron::client::NodeError;
use guarantor_tron::solid::SolidReader;
use guarantor_tron::TronAddress;
use rust_decimal::Decimal;
use sqlx::PgPool;

/// An address where the books and the chain disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub payment_id: i64,
    pub address: String,
    pub credited: Decimal,
    pub swept: Decimal,
    pub on_chain: Decimal,
    /// Sweeps still in flight: their coins may be between the address and the main wallet.
    pub open_sweeps: i64,
}

impl Difference {
    /// Credited minus (on chain + swept): positive when coins are missing from the chain.
    pub fn missing(&self) -> Decimal {
        self.credited - self.on_chain - self.swept
    }
}

/// The totals over every address, and the addresses that disagree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    pub addresses: usize,
    pub credited: Decimal,
    pub swept: Decimal,
    pub on_chain: Decimal,
    pub differences: Vec<Difference>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("node: {0}")]
    Node(#[from] NodeError),
    #[error("payment {0} has a malformed address")]
    Address(i64),
}

/// Compares every payment's address with the chain.
pub async fn against_chain(pool: &PgPool, reader: &SolidReader) -> Result<ChainReport, ReconcileError> {
    let rows = sqlx::query!(
        r#"SELECT p.id, p.address,
                  COALESCE((SELECT sum(d.amount) FROM deposits d WHERE d.payment_id = p.id), 0) AS "credited!",
                  COALESCE((SELECT sum(s.amount) FROM sweeps s WHERE s.payment_id = p.id AND s.status = 'confirmed'), 0)
                      AS "swept!",
                  (SELECT count(*) FROM sweeps s WHERE s.payment_id = p.id AND s.status NOT IN ('confirmed', 'failed'))
                      AS "open_sweeps!"
           FROM payments p ORDER BY p.id"#
    )
    .fetch_all(pool)
    .await?;
    let mut report = ChainReport {
        addresses: rows.len(),
        ..ChainReport::default()
    };
    for row in rows {
        let address: TronAddress = row.address.parse().map_err(|_| ReconcileError::Address(row.id))?;
        let units = reader.token_balance(&address).await?;
        let on_chain = guarantor_domain::Currency::Usdt.from_base_units(units);
        report.credited += row.credited;
        report.swept += row.swept;
        report.on_chain += on_chain;
        if row.credited != on_chain + row.swept {
            report.differences.push(Difference {
                payment_id: row.id,
                address: row.address,
                credited: row.credited,
                swept: row.swept,
                on_chain,
                open_sweeps: row.open_sweeps,
            });
        }
    }
    Ok(report)
}
