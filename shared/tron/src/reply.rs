//! java-tron's JSON replies as typed structs. A field the protocol always sends is required (its
//! absence is an error, never a zero or an empty string); a field java-tron omits when it is zero or
//! empty (protobuf 3 defaults: fees, counters, empty lists) is optional with that default.

use serde::Deserialize;

use crate::abi::{self, TRANSFER_EVENT_TOPIC};
use crate::client::NodeError;
use crate::TronAddress;

#[derive(Debug, Deserialize)]
pub(crate) struct BlockJson {
    #[serde(rename = "blockID")]
    pub block_id: String,
    pub block_header: HeaderJson,
    /// Omitted when the block has none.
    #[serde(default)]
    pub transactions: Vec<TransactionJson>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HeaderJson {
    pub raw_data: RawHeaderJson,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawHeaderJson {
    /// Omitted for block 0 only (a zero).
    pub number: Option<u64>,
    pub timestamp: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TransactionJson {
    #[serde(rename = "txID")]
    pub txid: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct InfoJson {
    pub id: String,
    #[serde(rename = "blockNumber")]
    pub block_number: u64,
    #[serde(rename = "blockTimeStamp")]
    pub block_time_ms: i64,
    #[serde(default)]
    pub fee: i64,
    #[serde(default)]
    pub receipt: ReceiptJson,
    /// Omitted when the transaction logged nothing.
    #[serde(default)]
    pub log: Vec<LogJson>,
    /// `FAILED` for a failed transaction; omitted on success.
    pub result: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReceiptJson {
    #[serde(default)]
    pub energy_usage_total: i64,
    #[serde(default)]
    pub energy_fee: i64,
    #[serde(default)]
    pub net_fee: i64,
    /// A contract call's outcome: SUCCESS, REVERT, OUT_OF_ENERGY, ...; omitted for TRX transfers.
    pub result: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogJson {
    /// The emitting contract's 20 bytes, hex.
    pub address: String,
    #[serde(default)]
    pub topics: Vec<String>,
    pub data: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AccountJson {
    /// Omitted when zero.
    #[serde(default)]
    pub balance: i64,
    pub create_time: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ResourcesJson {
    #[serde(rename = "freeNetLimit", default)]
    pub free_net_limit: i64,
    #[serde(rename = "freeNetUsed", default)]
    pub free_net_used: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChainParametersJson {
    #[serde(rename = "chainParameter")]
    pub chain_parameter: Vec<ChainParameterJson>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChainParameterJson {
    pub key: String,
    /// Omitted when zero; callers needing a fee refuse its absence.
    pub value: Option<i64>,
}

/// A decoded TRC-20 `Transfer` log and its index in the receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodedTransfer {
    pub log_index: u32,
    pub token: TronAddress,
    pub from: TronAddress,
    pub to: TronAddress,
    pub amount: u64,
}

fn malformed(what: impl std::fmt::Display) -> NodeError {
    NodeError::Unexpected(what.to_string())
}

fn word(text: &str) -> Result<[u8; 32], NodeError> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| malformed(format!("not a 32-byte topic: {text}")))
}

/// Parses a reply into `T`, naming `what` in the error.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(what: &str, value: serde_json::Value) -> Result<T, NodeError> {
    serde_json::from_value(value).map_err(|err| malformed(format!("{what}: {err}")))
}

impl InfoJson {
    /// Every `Transfer` log of the receipt (of any contract; callers pick the token). A log that says
    /// `Transfer` but does not decode is an error, never skipped.
    pub fn transfers(&self) -> Result<Vec<DecodedTransfer>, NodeError> {
        let mut found = Vec::new();
        for (index, log) in self.log.iter().enumerate() {
            let topics = log.topics.iter().map(|t| word(t)).collect::<Result<Vec<_>, _>>()?;
            if topics.first() != Some(&TRANSFER_EVENT_TOPIC) {
                continue;
            }
            let contract: [u8; 20] = hex::decode(&log.address)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| malformed(format!("{}: log {index} has no contract address", self.id)))?;
            let data = log
                .data
                .as_deref()
                .ok_or_else(|| malformed(format!("{}: a Transfer log without data", self.id)))
                .and_then(|data| hex::decode(data).map_err(|_| malformed(format!("{}: bad log data", self.id))))?;
            let transfer = abi::decode_transfer_log(&topics, &data)
                .map_err(|err| malformed(format!("{}: Transfer log {index}: {err}", self.id)))?;
            found.push(DecodedTransfer {
                log_index: u32::try_from(index).map_err(malformed)?,
                token: TronAddress::from_evm(contract),
                from: transfer.from,
                to: transfer.to,
                amount: transfer.amount,
            });
        }
        Ok(found)
    }
}
