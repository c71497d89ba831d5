//! A client for the java-tron HTTP API (`/wallet/*`, `/walletsolidity/*`) and TronGrid's `/v1`
//! TRC-20 listing: one request-rate limit per node and API key in the process (every client of that
//! key shares it, so the scanner and the sweeper together stay under the key's quota), timeouts, and
//! retries with full jitter that honour `Retry-After` and keep trying for `retry_budget` (longer than
//! a node's 30 s key suspension). Transient failures are recognised completely: 403, 429, 5xx,
//! timeouts, connection failures, an HTTP 200 with java-tron's `{"Error": ...}`, a reply cut short,
//! and the busy codes of a broadcast. Errors say whether they are transient.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::reply::{self, BlockJson, InfoJson};
use crate::tx::{self, ExpectedTrc20Transfer, SignedTransaction, TxHeader};
use crate::{abi, TronAddress};

#[derive(Clone)]
pub struct NodeConfig {
    /// Base URL of the node, e.g. `https://api.trongrid.io` or the devnet's `http://127.0.0.1:8090`.
    pub base_url: String,
    /// Sent as `TRON-PRO-API-KEY`.
    pub api_key: Option<String>,
    /// Most requests a second sent with this node URL and API key by the whole process
    /// (0: unlimited).
    pub rate_limit_rps: u32,
    pub timeout: Duration,
    /// Retries of a transient failure before giving up (whichever of this and the budget ends first).
    pub max_retries: u32,
    /// How long a call keeps retrying transient failures.
    pub retry_budget: Duration,
}

/// The API key never shows.
impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("rate_limit_rps", &self.rate_limit_rps)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_budget", &self.retry_budget)
            .finish()
    }
}

impl NodeConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: None,
            rate_limit_rps: 0,
            timeout: Duration::from_secs(10),
            max_retries: 30,
            retry_budget: Duration::from_secs(60),
        }
    }
}

/// Broadcast codes that mean "the node cannot take it now", not "the transaction is wrong".
const BUSY_CODES: [&str; 3] = ["SERVER_BUSY", "NO_CONNECTION", "NOT_ENOUGH_EFFECTIVE_CONNECTION"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// Worth retrying later: rate limits, suspensions, 5xx, timeouts, connection failures, java-tron's
    /// `{"Error": ...}`, replies cut short, a busy node.
    #[error("node unavailable ({status}): {message}")]
    Transient {
        status: u16,
        message: String,
        /// What the node's `Retry-After` asked for.
        retry_after: Option<Duration>,
    },
    /// The node refused a transaction, with java-tron's code (SIGERROR, DUP_TRANSACTION_ERROR, ...).
    #[error("node refused the transaction: {code}: {message}")]
    Refused { code: String, message: String },
    /// The node answered something this client does not understand, or an error of the request.
    #[error("unexpected node answer: {0}")]
    Unexpected(String),
}

impl NodeError {
    pub fn is_transient(&self) -> bool {
        matches!(self, NodeError::Transient { .. })
    }
}

/// A block as the client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    pub number: i64,
    pub id: [u8; 32],
    pub timestamp: i64,
    pub txids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub balance_sun: i64,
    pub create_time: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub free_net_limit: i64,
    pub free_net_used: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainParameters {
    pub energy_fee_sun: i64,
    pub transaction_fee_sun: i64,
    pub create_account_fee_sun: i64,
    pub create_new_account_fee_in_system_contract_sun: i64,
}

/// A TRC-20 Transfer log of a transaction, with its index in the transaction's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTransfer {
    pub log_index: u32,
    pub token: TronAddress,
    pub from: TronAddress,
    pub to: TronAddress,
    pub amount: u64,
}

/// A transaction's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxInfo {
    pub txid: String,
    pub block_number: i64,
    pub block_timestamp: i64,
    pub fee_sun: i64,
    pub energy_usage_total: i64,
    pub energy_fee_sun: i64,
    pub net_fee_sun: i64,
    /// `SUCCESS`, `REVERT`, `OUT_OF_ENERGY`, ... for contract calls; `None` for TRX transfers.
    pub result: Option<String>,
    pub failed: bool,
    pub transfers: Vec<LogTransfer>,
}

/// An entry of TronGrid's TRC-20 transfer listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trc20Transfer {
    pub txid: String,
    pub block_timestamp: i64,
    pub token: TronAddress,
    pub from: TronAddress,
    pub to: TronAddress,
    pub amount: u64,
}

#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    config: NodeConfig,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// Requests sent (retries included), for the callers' cost reports.
    sent: Arc<AtomicU64>,
}

fn unexpected(what: impl std::fmt::Display) -> NodeError {
    NodeError::Unexpected(what.to_string())
}

fn block_ref(block: Value) -> Result<BlockRef, NodeError> {
    let block: BlockJson = reply::parse("block", block)?;
    let id: [u8; 32] = hex::decode(&block.block_id)
        .ok()
        .and_then(|id| id.try_into().ok())
        .ok_or_else(|| unexpected(format!("bad blockID {}", block.block_id)))?;
    let number = block.block_header.raw_data.number.unwrap_or(0);
    Ok(BlockRef {
        number: i64::try_from(number).map_err(unexpected)?,
        id,
        timestamp: block.block_header.raw_data.timestamp,
        txids: block.transactions.into_iter().map(|t| t.txid).collect(),
    })
}

fn tx_info(info: Value) -> Result<TxInfo, NodeError> {
    let info: InfoJson = reply::parse("receipt", info)?;
    let transfers = info
        .transfers()?
        .into_iter()
        .map(|t| LogTransfer {
            log_index: t.log_index,
            token: t.token,
            from: t.from,
            to: t.to,
            amount: t.amount,
        })
        .collect();
    Ok(TxInfo {
        block_number: i64::try_from(info.block_number).map_err(unexpected)?,
        block_timestamp: info.block_time_ms,
        fee_sun: info.fee,
        energy_usage_total: info.receipt.energy_usage_total,
        energy_fee_sun: info.receipt.energy_fee,
        net_fee_sun: info.receipt.net_fee,
        failed: info.result.as_deref() == Some("FAILED"),
        result: info.receipt.result,
        txid: info.id,
        transfers,
    })
}

fn decode_message(value: &Value) -> String {
    value
        .as_str()
        .map(|m| {
            hex::decode(m)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_else(|| m.to_owned())
        })
        .unwrap_or_default()
}

/// The process's rate limiter for a node URL and API key, made on first use: every client with the
/// same key shares the key's budget.
fn shared_limiter(config: &NodeConfig) -> Option<Arc<DefaultDirectRateLimiter>> {
    type Limiters = std::sync::Mutex<HashMap<(String, [u8; 32]), Arc<DefaultDirectRateLimiter>>>;
    static LIMITERS: OnceLock<Limiters> = OnceLock::new();
    let rps = NonZeroU32::new(config.rate_limit_rps)?;
    let key: [u8; 32] = Sha256::digest(config.api_key.as_deref().unwrap_or_default()).into();
    let mut limiters = LIMITERS
        .get_or_init(Limiters::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let limiter = limiters
        .entry((config.base_url.clone(), key))
        .or_insert_with(|| Arc::new(RateLimiter::direct(Quota::per_second(rps).allow_burst(NonZeroU32::MIN))));
    Some(limiter.clone())
}

/// Full jitter: a random wait up to an exponentially growing cap (100 ms, doubling, at most 5 s).
fn backoff(attempt: u32) -> Duration {
    let cap_ms = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(rand::random::<u64>() % (cap_ms + 1))
}

fn transient(status: u16, message: impl Into<String>) -> NodeError {
    NodeError::Transient {
        status,
        message: message.into(),
        retry_after: None,
    }
}

impl NodeClient {
    pub fn new(config: NodeConfig) -> Result<Self, NodeError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(unexpected)?;
        Ok(Self {
            http,
            limiter: shared_limiter(&config),
            config,
            sent: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Requests this client (and its clones) sent so far, retries included.
    pub fn requests(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The same client with a request count of its own; the rate limit stays shared.
    pub fn counted_apart(&self) -> Self {
        Self {
            sent: Arc::new(AtomicU64::new(0)),
            ..self.clone()
        }
    }

    async fn once(&self, path: &str, body: Option<&Value>) -> Result<Value, NodeError> {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}{path}", self.config.base_url);
        let mut request = match body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        if let Some(key) = &self.config.api_key {
            request = request.header("TRON-PRO-API-KEY", key);
        }
        let response = request.send().await.map_err(|err| transient(0, err.to_string()))?;
        let status = response.status().as_u16();
        if status == 429 || status == 403 || status >= 500 {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(NodeError::Transient {
                status,
                message: response.text().await.unwrap_or_default(),
                retry_after,
            });
        }
        let text = response
            .text()
            .await
            .map_err(|err| transient(status, err.to_string()))?;
        if status >= 400 {
            return Err(unexpected(format!("{status}: {text}")));
        }
        // A reply that is not JSON was cut short (or garbled) on the way: ask again.
        let value: Value =
            serde_json::from_str(&text).map_err(|_| transient(status, format!("not JSON: {:.200}", text)))?;
        if let Some(error) = value.get("Error") {
            return Err(transient(status, format!("node error: {error}")));
        }
        if value["code"].as_str().is_some_and(|code| BUSY_CODES.contains(&code)) {
            return Err(transient(status, format!("node busy: {}", value["code"])));
        }
        Ok(value)
    }

    /// One call with retries of transient failures: full jitter, at least what `Retry-After` asked,
    /// for at most `max_retries` retries and `retry_budget` in all.
    pub(crate) async fn call(&self, path: &str, body: Option<Value>) -> Result<Value, NodeError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            match self.once(path, body.as_ref()).await {
                Err(NodeError::Transient {
                    status,
                    message,
                    retry_after,
                }) if attempt < self.config.max_retries => {
                    let wait = backoff(attempt).max(retry_after.unwrap_or_default());
                    if started.elapsed() + wait > self.config.retry_budget {
                        return Err(NodeError::Transient {
                            status,
                            message,
                            retry_after,
                        });
                    }
                    tracing::debug!(path, attempt, ?wait, status, message, "node call failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    fn path(solid: bool, method: &str) -> String {
        format!("/{}/{method}", if solid { "walletsolidity" } else { "wallet" })
    }

    pub async fn now_block(&self, solid: bool) -> Result<BlockRef, NodeError> {
        block_ref(self.call(&Self::path(solid, "getnowblock"), Some(json!({}))).await?)
    }

    pub async fn block(&self, number: i64, solid: bool) -> Result<Option<BlockRef>, NodeError> {
        let block = self
            .call(&Self::path(solid, "getblockbynum"), Some(json!({ "num": number })))
            .await?;
        if block.as_object().is_some_and(|b| b.is_empty()) {
            return Ok(None);
        }
        block_ref(block).map(Some)
    }

    pub async fn account(&self, address: &TronAddress) -> Result<Option<AccountInfo>, NodeError> {
        let account = self
            .call(
                "/wallet/getaccount",
                Some(json!({ "address": address.to_base58(), "visible": true })),
            )
            .await?;
        if account.as_object().is_some_and(|a| a.is_empty()) {
            return Ok(None);
        }
        let account: reply::AccountJson = reply::parse("account", account)?;
        Ok(Some(AccountInfo {
            balance_sun: account.balance,
            create_time: account.create_time,
        }))
    }

    pub async fn resources(&self, address: &TronAddress) -> Result<Resources, NodeError> {
        let resources = self
            .call(
                "/wallet/getaccountresource",
                Some(json!({ "address": address.to_base58(), "visible": true })),
            )
            .await?;
        let resources: reply::ResourcesJson = reply::parse("account resources", resources)?;
        Ok(Resources {
            free_net_limit: resources.free_net_limit,
            free_net_used: resources.free_net_used,
        })
    }

    pub async fn chain_parameters(&self) -> Result<ChainParameters, NodeError> {
        let parameters: reply::ChainParametersJson = reply::parse(
            "chain parameters",
            self.call("/wallet/getchainparameters", Some(json!({}))).await?,
        )?;
        // A fee is never taken as zero because the node left it out.
        let find = |key: &str| -> Result<i64, NodeError> {
            parameters
                .chain_parameter
                .iter()
                .find(|p| p.key == key)
                .and_then(|p| p.value)
                .ok_or_else(|| unexpected(format!("chain parameter {key} missing")))
        };
        Ok(ChainParameters {
            energy_fee_sun: find("getEnergyFee")?,
            transaction_fee_sun: find("getTransactionFee")?,
            create_account_fee_sun: find("getCreateAccountFee")?,
            create_new_account_fee_in_system_contract_sun: find("getCreateNewAccountFeeInSystemContract")?,
        })
    }

    async fn constant(
        &self,
        owner: &TronAddress,
        contract: &TronAddress,
        data: &[u8],
        solid: bool,
    ) -> Result<Value, NodeError> {
        let body = json!({
            "owner_address": owner.to_base58(),
            "contract_address": contract.to_base58(),
            "data": hex::encode(data),
            "visible": true,
        });
        let answer = self
            .call(&Self::path(solid, "triggerconstantcontract"), Some(body))
            .await?;
        if answer["result"]["result"].as_bool() != Some(true) {
            return Err(unexpected(format!(
                "contract call failed: {}",
                decode_message(&answer["result"]["message"])
            )));
        }
        // A reverting call runs (`result.result` is true); its transaction says FAILED.
        if answer["transaction"]["ret"][0]["ret"].as_str() == Some("FAILED") {
            return Err(unexpected(format!(
                "contract call reverted: {}",
                decode_message(&answer["result"]["message"])
            )));
        }
        Ok(answer)
    }

    /// A TRC-20 balance in base units; `solid` reads irreversible state only.
    pub async fn trc20_balance(&self, token: &TronAddress, owner: &TronAddress, solid: bool) -> Result<u64, NodeError> {
        self.constant_uint(owner, token, &abi::encode_balance_of(owner), solid)
            .await
    }

    /// The token's `decimals()`, from solidified state.
    pub async fn trc20_decimals(&self, token: &TronAddress) -> Result<u64, NodeError> {
        self.constant_uint(token, token, &abi::DECIMALS_SELECTOR, true).await
    }

    async fn constant_uint(
        &self,
        owner: &TronAddress,
        contract: &TronAddress,
        data: &[u8],
        solid: bool,
    ) -> Result<u64, NodeError> {
        let answer = self.constant(owner, contract, data, solid).await?;
        let word = answer["constant_result"][0]
            .as_str()
            .and_then(|w| hex::decode(w).ok())
            .ok_or_else(|| unexpected("no constant_result"))?;
        abi::decode_uint(&word).map_err(unexpected)
    }

    /// The energy a TRC-20 transfer would use now (a constant call's `energy_used` plus its
    /// `energy_penalty`); an error when the transfer would revert.
    pub async fn estimate_transfer_energy(
        &self,
        token: &TronAddress,
        owner: &TronAddress,
        to: &TronAddress,
        amount: u64,
    ) -> Result<i64, NodeError> {
        let answer = self
            .constant(owner, token, &abi::encode_transfer(to, amount), false)
            .await?;
        let used = answer["energy_used"]
            .as_i64()
            .ok_or_else(|| unexpected("no energy_used"))?;
        // Under the dynamic energy model a popular contract adds a penalty (omitted when zero).
        let penalty = answer["energy_penalty"].as_i64().unwrap_or(0);
        Ok(used + penalty)
    }

    /// A header referencing the current head block, valid for `lifetime`.
    pub async fn header(&self, lifetime: Duration) -> Result<TxHeader, NodeError> {
        Ok(self.header_at_head(lifetime).await?.0)
    }

    /// A header referencing the current head block, valid for `lifetime`, with that block's number
    /// (where the transaction's validity window starts).
    pub async fn header_at_head(&self, lifetime: Duration) -> Result<(TxHeader, i64), NodeError> {
        let head = self.now_block(false).await?;
        let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(60_000);
        let header = TxHeader::from_block(head.number, &head.id, head.timestamp.max(now_ms()), lifetime_ms);
        Ok((header, head.number))
    }

    fn raw_from_answer(transaction: &Value) -> Result<Vec<u8>, NodeError> {
        transaction["raw_data_hex"]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| unexpected("no raw_data_hex"))
    }

    /// A TRX transfer built by the node (`/wallet/createtransaction`): its raw bytes.
    pub async fn build_trx_transfer(
        &self,
        owner: &TronAddress,
        to: &TronAddress,
        amount_sun: i64,
    ) -> Result<Vec<u8>, NodeError> {
        let body = json!({ "owner_address": owner.to_base58(), "to_address": to.to_base58(), "amount": amount_sun, "visible": true });
        Self::raw_from_answer(&self.call("/wallet/createtransaction", Some(body)).await?)
    }

    /// A TRC-20 transfer built by the node, decoded and checked against what was asked for before it
    /// is returned for signing.
    pub async fn build_trc20_transfer(&self, expected: &ExpectedTrc20Transfer) -> Result<Vec<u8>, NodeError> {
        let body = json!({
            "owner_address": expected.owner.to_base58(),
            "contract_address": expected.token.to_base58(),
            "function_selector": "transfer(address,uint256)",
            "parameter": hex::encode(&abi::encode_transfer(&expected.to, expected.amount)[4..]),
            "fee_limit": expected.fee_limit_sun,
            "visible": true,
        });
        let answer = self.call("/wallet/triggersmartcontract", Some(body)).await?;
        if answer["result"]["result"].as_bool() != Some(true) {
            return Err(unexpected(format!(
                "node refused to build: {}",
                decode_message(&answer["result"]["message"])
            )));
        }
        let raw = Self::raw_from_answer(&answer["transaction"])?;
        tx::verify_trc20_transfer(&raw, expected).map_err(unexpected)?;
        Ok(raw)
    }

    /// Broadcasts signed bytes; java-tron's refusal codes come back as [`NodeError::Refused`].
    pub async fn broadcast(&self, signed: &SignedTransaction) -> Result<String, NodeError> {
        let bytes = signed.to_bytes().map_err(unexpected)?;
        self.broadcast_raw(&bytes, &signed.txid_hex()).await
    }

    /// Broadcasts a signed `Transaction` exactly as stored (never re-encoded); answers `txid`.
    pub async fn broadcast_raw(&self, bytes: &[u8], txid: &str) -> Result<String, NodeError> {
        let answer = self
            .call(
                "/wallet/broadcasthex",
                Some(json!({ "transaction": hex::encode(bytes) })),
            )
            .await?;
        if answer["result"].as_bool() == Some(true) {
            return Ok(txid.to_owned());
        }
        let code = answer["code"]
            .as_str()
            .ok_or_else(|| unexpected(format!("a broadcast answer neither accepted nor refused: {answer}")))?;
        Err(NodeError::Refused {
            code: code.to_owned(),
            message: decode_message(&answer["message"]),
        })
    }

    /// The receipt of a transaction once a block (a solidified one, with `solid`) includes it.
    pub async fn transaction_info(&self, txid: &str, solid: bool) -> Result<Option<TxInfo>, NodeError> {
        let info = self
            .call(
                &Self::path(solid, "gettransactioninfobyid"),
                Some(json!({ "value": txid })),
            )
            .await?;
        if info.as_object().is_some_and(|i| i.is_empty()) {
            return Ok(None);
        }
        tx_info(info).map(Some)
    }

    /// Every confirmed TRC-20 transfer of `token` to `to`, newest first, from TronGrid's `/v1`
    /// listing, `page` entries a request, following `meta.fingerprint` to the last page. Entries are
    /// parsed strictly: a missing txid, address or value is an error, never a default.
    pub async fn trc20_transfers_to(
        &self,
        to: &TronAddress,
        token: &TronAddress,
        page: u32,
    ) -> Result<Vec<Trc20Transfer>, NodeError> {
        #[derive(serde::Deserialize)]
        struct Listing {
            data: Vec<Entry>,
            #[serde(default)]
            meta: Meta,
        }
        #[derive(serde::Deserialize, Default)]
        struct Meta {
            fingerprint: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            transaction_id: String,
            block_timestamp: i64,
            token_info: TokenInfo,
            from: String,
            to: String,
            value: String,
        }
        #[derive(serde::Deserialize)]
        struct TokenInfo {
            address: String,
        }
        let address = |text: &str| -> Result<TronAddress, NodeError> {
            text.parse().map_err(|_| unexpected(format!("not an address: {text}")))
        };
        let mut transfers = Vec::new();
        let mut fingerprint: Option<String> = None;
        loop {
            let mut path = format!(
                "/v1/accounts/{}/transactions/trc20?only_confirmed=true&only_to=true&limit={page}&contract_address={}",
                to.to_base58(),
                token.to_base58()
            );
            if let Some(fingerprint) = &fingerprint {
                path.push_str("&fingerprint=");
                path.extend(form_urlencoded::byte_serialize(fingerprint.as_bytes()));
            }
            let listing: Listing = serde_json::from_value(self.call(&path, None).await?)
                .map_err(|err| unexpected(format!("TRC-20 listing: {err}")))?;
            for entry in listing.data {
                transfers.push(Trc20Transfer {
                    txid: entry.transaction_id,
                    block_timestamp: entry.block_timestamp,
                    token: address(&entry.token_info.address)?,
                    from: address(&entry.from)?,
                    to: address(&entry.to)?,
                    amount: entry
                        .value
                        .parse()
                        .map_err(|_| unexpected(format!("not an amount: {}", entry.value)))?,
                });
            }
            match listing.meta.fingerprint {
                Some(next) if Some(&next) != fingerprint.as_ref() => fingerprint = Some(next),
                _ => return Ok(transfers),
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let mut config = NodeConfig::new("https://api.trongrid.io");
        config.api_key = Some("key-very-secret".into());
        let client = NodeClient::new(config.clone()).unwrap();
        for debug in [format!("{config:?}"), format!("{client:?}")] {
            assert!(!debug.contains("key-very-secret"), "{debug}");
            assert!(debug.contains("REDACTED"), "{debug}");
        }
    }
}
