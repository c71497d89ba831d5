//! The sweeper: moves credited USDT from deposit addresses to the main wallet
//! (`GUARANTOR_TRON_MAIN_WALLET`), exactly once per sweep, whatever crashes. Every
//! `GUARANTOR_SWEEP_INTERVAL_SECS` it opens a sweep for each address whose credited, unswept USDT
//! reaches `GUARANTOR_SWEEP_MIN_AMOUNT`, takes the lease of the due ones (several sweeper processes
//! may run: one works on a sweep at a time) and advances each through its persisted states:
//!
//! - `fee_check`: the transfer's energy (the node's estimate for this very transfer) with a margin,
//!   at the chain's energy price, plus bandwidth; enough TRX on the address → `sending`, else
//!   `topping_up`;
//! - `topping_up`: a TRX transfer of exactly what is missing from the fee wallet, built and signed
//!   locally, **stored before it is broadcast**, re-broadcast as the same bytes until its solidified
//!   receipt is there; at most one top-up per sweep;
//! - `sending`: the USDT transfer, signed with the deposit key (derived from the HD seed at the
//!   payment's index), stored, broadcast (`sweep.submitted`), and done only when the solidified
//!   receipt says `SUCCESS` and its `Transfer` log matches (`sweep.confirmed`, with the fee really
//!   paid). `REVERT` or `OUT_OF_ENERGY` are recorded with their fee and retried from the fee check.
//!
//! A transaction that is neither in a solidified block nor refused is broadcast again (the same
//! bytes; `DUP_TRANSACTION_ERROR` means it is in); a new one is built only after its expiration has
//! passed in solidified chain time and every solidified block of its validity window was read
//! without it. Failures are retried with backoff; after `GUARANTOR_SWEEP_MAX_ATTEMPTS` a sweep is
//! `failed` (`sweep.failed`) until an operator retries it.

pub mod fee;
pub mod reconcile;
pub mod repo;

use std::time::Duration;

use chrono::{DateTime, Utc};
use guarantor_tron::client::{NodeClient, NodeError};
use guarantor_tron::solid::SolidReader;
use guarantor_tron::{tx, HdWallet, PrivateKey, TronAddress};
use prost::Message;
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use fee::FeeInputs;
use repo::{StoredTx, Sweep, SweepStatus, TxKind};

#[derive(Debug, Clone)]
pub struct SweepSettings {
    pub interval: Duration,
    pub min_amount: Decimal,
    /// Margin on the estimated energy, in percent.
    pub fee_margin_percent: u32,
    /// The most TRX (sun) one transfer may need; above it the sweep waits for an operator.
    pub max_fee_sun: i64,
    /// How long a built transaction stays valid.
    pub tx_lifetime: Duration,
    /// Failed attempts before a sweep is `failed`.
    pub max_attempts: i32,
}

/// The keys and wallets a sweeper works with. Never printed.
pub struct Wallets {
    pub hd: HdWallet,
    pub fee_wallet: PrivateKey,
    pub main_wallet: TronAddress,
}

impl std::fmt::Debug for Wallets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallets")
            .field("fee_wallet", &self.fee_wallet.address())
            .field("main_wallet", &self.main_wallet)
            .finish_non_exhaustive()
    }
}

/// Why an attempt at a sweep did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Not a failure: the chain has to move first (a transaction to solidify, coins to arrive).
    #[error("waiting: {0}")]
    Waiting(String),
    #[error("node: {0}")]
    Node(#[from] NodeError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Failed(String),
    #[error("the sweep's lease was lost to another sweeper")]
    LostLease,
}

#[derive(Debug)]
pub struct Sweeper {
    pub pool: PgPool,
    pub node: NodeClient,
    pub reader: SolidReader,
    pub wallets: Wallets,
    pub settings: SweepSettings,
    pub holder: Uuid,
}

fn usdt_units(amount: Decimal) -> Result<u64, SweepError> {
    guarantor_domain::Currency::Usdt
        .to_base_units(amount)
        .ok_or_else(|| SweepError::Failed(format!("{amount} is not a USDT amount in base units")))
}

fn parse_address(text: &str) -> Result<TronAddress, SweepError> {
    text.parse()
        .map_err(|_| SweepError::Failed(format!("{text} is not a TRON address")))
}

impl Sweeper {
    /// One pass: open the sweeps that are due, then take and advance them one at a time (up to
    /// `SWEEPS_PER_PASS`), each under a lease taken just before its work, so a long pass never works
    /// on a sweep whose lease ran out meanwhile.
    pub async fn pass(&self) -> Result<(), SweepError> {
        let opened = repo::plan(&self.pool, self.settings.min_amount).await?;
        if opened > 0 {
            tracing::info!(opened, "sweeps opened");
        }
        report(&repo::stats(&self.pool).await?);
        // Short, so that a crashed holder is taken over soon; every write is fenced by it anyway.
        let lease = (self.settings.interval * 4).max(Duration::from_secs(10)).as_secs_f64();
        let mut handled = Vec::new();
        while handled.len() < SWEEPS_PER_PASS {
            let Some(sweep) = repo::claim_next(&self.pool, self.holder, lease, &handled).await? else {
                break;
            };
            handled.push(sweep.id);
            match self.advance(&sweep).await {
                Ok(()) => {}
                Err(SweepError::Waiting(why)) => tracing::debug!(sweep = sweep.id, why, "sweep waits for the chain"),
                Err(SweepError::LostLease) => tracing::warn!(sweep = sweep.id, "sweep lease lost"),
                Err(err) => self.failed_attempt(&sweep, &err.to_string()).await?,
            }
        }
        Ok(())
    }

    async fn failed_attempt(&self, sweep: &Sweep, error: &str) -> Result<(), SweepError> {
        let attempts = sweep.attempts + 1;
        let give_up = attempts >= self.settings.max_attempts;
        let backoff = (self.settings.interval.as_secs() << attempts.clamp(0, 6)).min(3_600);
        tracing::error!(
            sweep = sweep.id,
            payment_id = %sweep.payment_id,
            address = %sweep.address,
            attempts,
            error,
            "sweep attempt failed"
        );
        repo::record_error(&self.pool, sweep.id, self.holder, error, backoff as f64, give_up).await?;
        if give_up {
            if let Some(mut tx) = repo::fenced(&self.pool, sweep.id, self.holder).await? {
                repo::emit(
                    &mut tx,
                    sweep.id,
                    sweep.tenant_id,
                    "failed",
                    json!({ "sweep_id": sweep.id, "payment_id": sweep.payment_id, "address": sweep.address,
                            "amount": sweep.amount.to_string(), "error": error, "attempts": attempts }),
                )
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Runs the sweep's state machine until it waits for the chain or is confirmed.
    async fn advance(&self, sweep: &Sweep) -> Result<(), SweepError> {
        let mut status = sweep.status;
        let mut needed = sweep.fee_needed_sun;
        loop {
            status = match status {
                SweepStatus::FeeCheck => {
                    let (next, fee) = self.fee_check(sweep).await?;
                    self.move_to(sweep, next, Some(fee), 0).await?;
                    needed = Some(fee);
                    next
                }
                SweepStatus::ToppingUp => {
                    let fee = needed.ok_or_else(|| SweepError::Failed("no fee estimate to top up".into()))?;
                    self.top_up(sweep, fee).await?;
                    SweepStatus::Sending
                }
                SweepStatus::Sending => {
                    let fee = needed.ok_or_else(|| SweepError::Failed("no fee estimate to send with".into()))?;
                    return self.send(sweep, fee).await;
                }
                SweepStatus::Confirmed | SweepStatus::Failed => return Ok(()),
            };
        }
    }

    async fn move_to(
        &self,
        sweep: &Sweep,
        status: SweepStatus,
        needed: Option<i64>,
        fee: i64,
    ) -> Result<(), SweepError> {
        let mut tx = repo::fenced(&self.pool, sweep.id, self.holder)
            .await?
            .ok_or(SweepError::LostLease)?;
        repo::set_status(&mut tx, sweep.id, status, needed, fee).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The TRX the transfer needs, and whether the address has it.
    async fn fee_check(&self, sweep: &Sweep) -> Result<(SweepStatus, i64), SweepError> {
        let address = parse_address(&sweep.address)?;
        let units = usdt_units(sweep.amount)?;
        let held = self.reader.token_balance(&address).await?;
        if held < units {
            return Err(SweepError::Waiting(format!(
                "the address holds {held} units, the sweep moves {units}"
            )));
        }
        let (inputs, balance) = self.fee_inputs(sweep, &address).await?;
        let needed =
            fee::needed_sun(inputs).ok_or_else(|| SweepError::Failed("the fee does not fit in an integer".into()))?;
        if needed > self.settings.max_fee_sun {
            return Err(SweepError::Failed(format!(
                "the transfer needs {needed} sun, above GUARANTOR_SWEEP_MAX_FEE_TRX"
            )));
        }
        let next = if balance.unwrap_or(0) >= needed {
            SweepStatus::Sending
        } else {
            SweepStatus::ToppingUp
        };
        Ok((next, needed))
    }

    /// The chain's prices, the node's energy estimate for this transfer and the address's free
    /// bandwidth, with the address's solidified TRX balance (`None`: never activated).
    async fn fee_inputs(&self, sweep: &Sweep, address: &TronAddress) -> Result<(FeeInputs, Option<i64>), SweepError> {
        let units = usdt_units(sweep.amount)?;
        let energy = self
            .node
            .estimate_transfer_energy(self.reader.token(), address, &self.wallets.main_wallet, units)
            .await?;
        let prices = self.node.chain_parameters().await?;
        let balance = self.reader.trx_balance(address).await?;
        let free_bandwidth = match balance {
            Some(_) => {
                let resources = self.node.resources(address).await?;
                Some(resources.free_net_limit - resources.free_net_used)
            }
            None => None,
        };
        let inputs = FeeInputs {
            energy,
            energy_price_sun: prices.energy_fee_sun,
            bandwidth_price_sun: prices.transaction_fee_sun,
            free_bandwidth,
            margin_percent: self.settings.fee_margin_percent,
        };
        Ok((inputs, balance))
    }

    /// Makes sure the address holds `needed` sun: one top-up from the fee wallet, solidified.
    async fn top_up(&self, sweep: &Sweep, needed: i64) -> Result<(), SweepError> {
        let address = parse_address(&sweep.address)?;
        if let Some(live) = repo::live_tx(&self.pool, sweep.id, TxKind::TopUp).await? {
            let receipt = self.settled(sweep, &live).await?;
            let mut tx = repo::fenced(&self.pool, sweep.id, self.holder)
                .await?
                .ok_or(SweepError::LostLease)?;
            repo::settle_tx(
                &mut tx,
                &live.txid,
                "confirmed",
                receipt.result.as_deref(),
                Some(receipt.fee_sun),
                i64::try_from(receipt.block_number).ok(),
            )
            .await?;
            repo::set_status(&mut tx, sweep.id, SweepStatus::Sending, None, receipt.fee_sun).await?;
            tx.commit().await?;
            return Ok(());
        }
        if repo::topped_up(&self.pool, sweep.id).await? {
            self.move_to(sweep, SweepStatus::Sending, None, 0).await?;
            return Ok(());
        }
        let balance = self.reader.trx_balance(&address).await?.unwrap_or(0);
        let missing = needed - balance;
        if missing <= 0 {
            self.move_to(sweep, SweepStatus::Sending, None, 0).await?;
            return Ok(());
        }
        let (header, ref_block) = self.node.header_at_head(self.settings.tx_lifetime).await?;
        let raw = tx::trx_transfer(&header, &self.wallets.fee_wallet.address(), &address, missing);
        let stored = self
            .sign_and_store(sweep, TxKind::TopUp, raw, ref_block, &self.wallets.fee_wallet, None)
            .await?;
        self.broadcast(&stored).await?;
        Err(SweepError::Waiting(format!("top-up {} sent", stored.txid)))
    }

    /// The USDT transfer: built, stored, broadcast, confirmed by its solidified receipt.
    async fn send(&self, sweep: &Sweep, needed: i64) -> Result<(), SweepError> {
        let address = parse_address(&sweep.address)?;
        let units = usdt_units(sweep.amount)?;
        if let Some(live) = repo::live_tx(&self.pool, sweep.id, TxKind::Transfer).await? {
            let receipt = self.settled(sweep, &live).await?;
            let landed = receipt.result.as_deref() == Some("SUCCESS")
                && !receipt.failed
                && receipt
                    .transfers
                    .iter()
                    .any(|t| t.from == address && t.to == self.wallets.main_wallet && t.amount == units);
            let block = i64::try_from(receipt.block_number).ok();
            let mut tx = repo::fenced(&self.pool, sweep.id, self.holder)
                .await?
                .ok_or(SweepError::LostLease)?;
            if landed {
                repo::settle_tx(
                    &mut tx,
                    &live.txid,
                    "confirmed",
                    Some("SUCCESS"),
                    Some(receipt.fee_sun),
                    block,
                )
                .await?;
                repo::set_status(&mut tx, sweep.id, SweepStatus::Confirmed, None, receipt.fee_sun).await?;
                repo::emit(
                    &mut tx,
                    sweep.id,
                    sweep.tenant_id,
                    "confirmed",
                    json!({ "sweep_id": sweep.id, "payment_id": sweep.payment_id, "address": sweep.address,
                            "amount": sweep.amount.to_string(), "txid": live.txid, "block_number": block,
                            "fee_paid_sun": sweep.fee_paid_sun + receipt.fee_sun }),
                )
                .await?;
                tx.commit().await?;
                tracing::info!(sweep = sweep.id, txid = %live.txid, fee_sun = receipt.fee_sun, "sweep confirmed");
                return Ok(());
            }
            let result = receipt.result.clone().unwrap_or_else(|| "FAILED".to_owned());
            repo::settle_tx(
                &mut tx,
                &live.txid,
                "failed",
                Some(&result),
                Some(receipt.fee_sun),
                block,
            )
            .await?;
            repo::set_status(&mut tx, sweep.id, SweepStatus::FeeCheck, None, receipt.fee_sun).await?;
            // The failed transfer burned the top-up's TRX: the next attempt may need its own.
            repo::spend_top_up(&mut tx, sweep.id).await?;
            tx.commit().await?;
            return Err(SweepError::Failed(format!("transfer {} ended {result}", live.txid)));
        }
        let key = self
            .wallets
            .hd
            .derive(u32::try_from(sweep.hd_index).map_err(|_| SweepError::Failed("bad HD index".into()))?)
            .map_err(|err| SweepError::Failed(err.to_string()))?;
        if key.address() != address {
            return Err(SweepError::Failed(
                "the HD seed does not derive this deposit address (a different GUARANTOR_HD_SEED?)".into(),
            ));
        }
        // What the transfer may burn at most: the energy estimate with its margin.
        let limit = fee::fee_limit_sun(self.fee_inputs(sweep, &address).await?.0)
            .ok_or_else(|| SweepError::Failed("the fee limit does not fit in an integer".into()))?
            .min(needed);
        let (header, ref_block) = self.node.header_at_head(self.settings.tx_lifetime).await?;
        let raw = tx::trc20_transfer(
            &header,
            &address,
            self.reader.token(),
            &self.wallets.main_wallet,
            units,
            limit,
        );
        let stored = self
            .sign_and_store(
                sweep,
                TxKind::Transfer,
                raw,
                ref_block,
                &key,
                Some(
                    json!({ "sweep_id": sweep.id, "payment_id": sweep.payment_id, "address": sweep.address,
                              "amount": sweep.amount.to_string() }),
                ),
            )
            .await?;
        self.broadcast(&stored).await?;
        Err(SweepError::Waiting(format!("transfer {} sent", stored.txid)))
    }

    /// Signs `raw`, stores the signed bytes (and, for a transfer, the `sweep.submitted` event) in one
    /// transaction, before anything is broadcast.
    async fn sign_and_store(
        &self,
        sweep: &Sweep,
        kind: TxKind,
        raw: guarantor_tron::proto::TransactionRaw,
        ref_block: i64,
        key: &PrivateKey,
        submitted: Option<serde_json::Value>,
    ) -> Result<StoredTx, SweepError> {
        let expiration = DateTime::<Utc>::from_timestamp_millis(raw.expiration)
            .ok_or_else(|| SweepError::Failed("bad expiration".into()))?;
        let signed = tx::sign(raw.encode_to_vec(), key);
        let stored = StoredTx {
            txid: signed.txid_hex(),
            kind,
            raw: signed.to_bytes().map_err(|err| SweepError::Failed(err.to_string()))?,
            ref_block,
            expiration,
        };
        let mut tx = repo::fenced(&self.pool, sweep.id, self.holder)
            .await?
            .ok_or(SweepError::LostLease)?;
        repo::store_tx(&mut tx, sweep.id, &stored).await?;
        if let Some(mut data) = submitted {
            data["txid"] = json!(stored.txid);
            repo::emit(&mut tx, sweep.id, sweep.tenant_id, "submitted", data).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Broadcasts the stored bytes; a duplicate means the node has them already.
    async fn broadcast(&self, stored: &StoredTx) -> Result<(), SweepError> {
        match self.node.broadcast_raw(&stored.raw, &stored.txid).await {
            Ok(_) => Ok(()),
            Err(NodeError::Refused { code, .. }) if code == "DUP_TRANSACTION_ERROR" => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// The solidified receipt of a stored transaction. While there is none: broadcast the same bytes
    /// again, or — once it has expired in solidified chain time and no solidified block of its window
    /// holds it — mark it expired so that a new one is built.
    async fn settled(
        &self,
        sweep: &Sweep,
        stored: &StoredTx,
    ) -> Result<guarantor_tron::solid::SolidReceipt, SweepError> {
        if let Some(receipt) = self.reader.receipt(&stored.txid).await? {
            return Ok(receipt);
        }
        if self.absent_for_good(stored).await? {
            let mut tx = repo::fenced(&self.pool, sweep.id, self.holder)
                .await?
                .ok_or(SweepError::LostLease)?;
            repo::settle_tx(&mut tx, &stored.txid, "expired", None, None, None).await?;
            tx.commit().await?;
            tracing::warn!(sweep = sweep.id, txid = %stored.txid, "transaction expired unmined; a new one follows");
            return Err(SweepError::Waiting(format!("{} expired unmined", stored.txid)));
        }
        match self.broadcast(stored).await {
            Ok(()) => {}
            Err(SweepError::Node(NodeError::Refused { code, .. })) if code == "TRANSACTION_EXPIRATION_ERROR" => {}
            Err(err) => return Err(err),
        }
        Err(SweepError::Waiting(format!("{} not solidified yet", stored.txid)))
    }

    /// True only when the solidified head is past the expiration and every solidified block from the
    /// reference block to the first one after the expiration was read without the transaction.
    async fn absent_for_good(&self, stored: &StoredTx) -> Result<bool, SweepError> {
        let solid = self.reader.head().await?;
        let Ok(start) = u64::try_from(stored.ref_block) else {
            return Ok(false);
        };
        let expiration_ms = stored.expiration.timestamp_millis();
        if solid < start || self.reader.block(solid).await?.time_ms <= expiration_ms {
            return Ok(false);
        }
        for number in start..=solid {
            let block = self.reader.block(number).await?;
            if block.txids.contains(&stored.txid) {
                return Ok(false);
            }
            if block.time_ms > expiration_ms {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Sets the sweep metrics from the database's figures (the same whichever replica reports them).
fn report(stats: &repo::Stats) {
    for (status, count) in &stats.by_status {
        metrics::gauge!("guarantor_sweeps_total", "status" => status.clone()).set(*count as f64);
    }
    let fee_trx = Decimal::from(stats.fee_paid_sun) / Decimal::from(1_000_000u32);
    metrics::gauge!("guarantor_sweep_fee_trx_total").set(f64::try_from(fee_trx).unwrap_or(f64::NAN));
    metrics::gauge!("guarantor_unswept_usdt").set(f64::try_from(stats.unswept).unwrap_or(f64::NAN));
}

/// The events after which a sweep may be due: a deposit was credited.
pub const WAKE_SUBJECT: &str = "guarantor.evt.payment.*.received";

/// Most sweeps one pass works on; the rest wait for the next pass (or another sweeper).
const SWEEPS_PER_PASS: usize = 16;

/// Runs passes every `settings.interval` until `shutdown`, and at once when a deposit is credited
/// (a missed event only delays a sweep until the next pass).
pub async fn run(sweeper: Sweeper, nats: async_nats::Client, shutdown: CancellationToken) {
    tracing::info!(
        main_wallet = %sweeper.wallets.main_wallet,
        fee_wallet = %sweeper.wallets.fee_wallet.address(),
        interval = ?sweeper.settings.interval,
        "sweeper started"
    );
    let mut credited = match nats.subscribe(WAKE_SUBJECT).await {
        Ok(subscription) => Some(subscription),
        Err(err) => {
            tracing::warn!(error = %err, "cannot follow credited deposits; sweeping on the interval only");
            None
        }
    };
    loop {
        // A pass stopped at any point is like a crash, which every step is built to survive.
        let passed = tokio::select! {
            () = shutdown.cancelled() => return,
            passed = sweeper.pass() => passed,
        };
        if let Err(err) = passed {
            tracing::error!(error = %err, "sweep pass failed; the next one tries again");
        }
        let woken = async {
            match credited.as_mut() {
                Some(subscription) => {
                    futures::StreamExt::next(subscription).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(sweeper.settings.interval) => {}
            () = woken => {}
        }
    }
}
