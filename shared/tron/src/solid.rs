//! Reads of **solidified** (irreversible) chain state, and nothing else: `/walletsolidity/*` only.
//! Crediting code takes [`SolidBlock`] and [`SolidTransfer`], which only this module can make, so it
//! cannot be handed head-of-chain data by mistake — by its types, not by a flag.
//!
//! Replies are parsed into typed structs: a missing block number, txid or log field is an error
//! (which the caller retries), never a zero or an empty string. A block is read completely or not at
//! all: the receipts must match the block's transactions one for one.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::client::{NodeClient, NodeError};
use crate::reply::{parse, AccountJson, BlockJson, InfoJson};
use crate::TronAddress;

/// Proof of origin: only this module constructs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solidified(());

/// A TRC-20 `Transfer` of the watched token, read from a solidified block's receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolidTransfer {
    pub txid: String,
    /// Index of the log in its transaction's receipt.
    pub log_index: u32,
    pub from: TronAddress,
    pub to: TronAddress,
    /// In the token's base units.
    pub amount: u64,
    pub block_number: u64,
    /// Milliseconds since the epoch.
    pub block_time_ms: i64,
    pub solidified: Solidified,
}

/// A solidified block, read completely: its number, time, and every `Transfer` of the token in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolidBlock {
    pub number: u64,
    pub time_ms: i64,
    pub txids: Vec<String>,
    pub transfers: Vec<SolidTransfer>,
    pub solidified: Solidified,
}

fn malformed(what: impl std::fmt::Display) -> NodeError {
    NodeError::Unexpected(what.to_string())
}

fn is_empty_object(value: &Value) -> bool {
    value.as_object().is_some_and(|object| object.is_empty())
}

/// The `Transfer`s of `token` in one receipt (none for a failed transaction).
fn transfers_of(info: &InfoJson, token: &TronAddress) -> Result<Vec<SolidTransfer>, NodeError> {
    if info.result.as_deref() == Some("FAILED") {
        return Ok(Vec::new());
    }
    Ok(info
        .transfers()?
        .into_iter()
        .filter(|transfer| transfer.token == *token)
        .map(|transfer| SolidTransfer {
            txid: info.id.clone(),
            log_index: transfer.log_index,
            from: transfer.from,
            to: transfer.to,
            amount: transfer.amount,
            block_number: info.block_number,
            block_time_ms: info.block_time_ms,
            solidified: Solidified(()),
        })
        .collect())
}

fn txid_ok(txid: &str) -> bool {
    txid.len() == 64 && txid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The solidified view of a node, for one token.
#[derive(Debug, Clone)]
pub struct SolidReader {
    node: NodeClient,
    token: TronAddress,
}

impl SolidReader {
    pub fn new(node: NodeClient, token: TronAddress) -> Self {
        Self { node, token }
    }

    pub fn token(&self) -> &TronAddress {
        &self.token
    }

    /// The token's `decimals()` in solidified state.
    pub async fn token_decimals(&self) -> Result<u64, NodeError> {
        self.node.trc20_decimals(&self.token).await
    }

    /// The token balance of `owner` in solidified state (a constant `balanceOf` call).
    pub async fn token_balance(&self, owner: &TronAddress) -> Result<u64, NodeError> {
        self.node.trc20_balance(&self.token, owner, true).await
    }

    /// The confirmed transfers of the token to `to` that TronGrid lists (every page). Only
    /// candidates: each must be confirmed with [`SolidReader::transaction`] before it is credited.
    pub async fn listed_transfers_to(&self, to: &TronAddress) -> Result<Vec<crate::client::Trc20Transfer>, NodeError> {
        self.node.trc20_transfers_to(to, &self.token, 200).await
    }

    /// Requests sent to the node so far (retries included).
    pub fn requests(&self) -> u64 {
        self.node.requests()
    }

    /// The same reader with a request count of its own (the rate limit stays shared).
    pub fn counted_apart(&self) -> Self {
        Self {
            node: self.node.counted_apart(),
            token: self.token,
        }
    }

    /// The number of the newest solidified block.
    pub async fn head(&self) -> Result<u64, NodeError> {
        let block: BlockJson = parse(
            "solidified head",
            self.node.call("/walletsolidity/getnowblock", Some(json!({}))).await?,
        )?;
        // java-tron omits a zero: only block 0 has no number.
        Ok(block.block_header.raw_data.number.unwrap_or(0))
    }

    /// Block `number` (at or below the solidified head) with every `Transfer` of the token in it.
    /// `{}` for such a block, receipts that do not match its transactions, or a receipt of another
    /// block are errors: the block was not read completely.
    pub async fn block(&self, number: u64) -> Result<SolidBlock, NodeError> {
        let raw = self
            .node
            .call("/walletsolidity/getblockbynum", Some(json!({ "num": number })))
            .await?;
        if is_empty_object(&raw) {
            return Err(malformed(format!("solidified block {number} is missing")));
        }
        let block: BlockJson = parse("block", raw)?;
        let header = &block.block_header.raw_data;
        if header.number.unwrap_or(0) != number || block.block_id.len() != 64 {
            return Err(malformed(format!(
                "asked for block {number}, got {:?} ({})",
                header.number, block.block_id
            )));
        }
        let txids: HashSet<&str> = block.transactions.iter().map(|t| t.txid.as_str()).collect();
        if txids.len() != block.transactions.len() || !txids.iter().all(|t| txid_ok(t)) {
            return Err(malformed(format!("block {number} lists malformed or repeated txids")));
        }
        let mut transfers = Vec::new();
        if !block.transactions.is_empty() {
            let raw = self
                .node
                .call(
                    "/walletsolidity/gettransactioninfobyblocknum",
                    Some(json!({ "num": number })),
                )
                .await?;
            let infos: Vec<InfoJson> = parse("receipts", raw)?;
            let receipted: HashSet<&str> = infos.iter().map(|info| info.id.as_str()).collect();
            if infos.len() != block.transactions.len() || receipted != txids {
                return Err(malformed(format!(
                    "block {number} has {} transactions but {} receipts",
                    block.transactions.len(),
                    infos.len()
                )));
            }
            for info in &infos {
                if info.block_number != number || info.block_time_ms != header.timestamp {
                    return Err(malformed(format!("receipt {} is of another block", info.id)));
                }
                transfers.extend(transfers_of(info, &self.token)?);
            }
        }
        Ok(SolidBlock {
            number,
            time_ms: header.timestamp,
            txids: block.transactions.into_iter().map(|t| t.txid).collect(),
            transfers,
            solidified: Solidified(()),
        })
    }

    /// The token's `Transfer`s in transaction `txid`, once it is solidified; `None` while it is not
    /// (or unknown to the node). A `{}` is never taken as proof that nothing arrived: the caller only
    /// credits what this returns.
    pub async fn transaction(&self, txid: &str) -> Result<Option<Vec<SolidTransfer>>, NodeError> {
        Ok(self.receipt(txid).await?.map(|receipt| receipt.transfers))
    }

    /// The solidified receipt of transaction `txid`; `None` while there is none (which proves
    /// nothing about the transaction: only reading the blocks of its validity window does).
    pub async fn receipt(&self, txid: &str) -> Result<Option<SolidReceipt>, NodeError> {
        if !txid_ok(txid) {
            return Err(malformed(format!("not a txid: {txid}")));
        }
        let raw = self
            .node
            .call("/walletsolidity/gettransactioninfobyid", Some(json!({ "value": txid })))
            .await?;
        if is_empty_object(&raw) {
            return Ok(None);
        }
        let info: InfoJson = parse("receipt", raw)?;
        if info.id != txid {
            return Err(malformed(format!("asked for {txid}, got the receipt of {}", info.id)));
        }
        Ok(Some(SolidReceipt {
            transfers: transfers_of(&info, &self.token)?,
            block_number: info.block_number,
            fee_sun: info.fee,
            result: info.receipt.result.clone(),
            failed: info.result.as_deref() == Some("FAILED"),
            solidified: Solidified(()),
        }))
    }

    /// The TRX balance of `address` in solidified state; `None` for an account never activated.
    pub async fn trx_balance(&self, address: &TronAddress) -> Result<Option<i64>, NodeError> {
        let raw = self
            .node
            .call(
                "/walletsolidity/getaccount",
                Some(json!({ "address": address.to_base58(), "visible": true })),
            )
            .await?;
        if is_empty_object(&raw) {
            return Ok(None);
        }
        let account: AccountJson = parse("account", raw)?;
        Ok(Some(account.balance))
    }
}

/// A solidified receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolidReceipt {
    pub block_number: u64,
    /// Everything the transaction burned (bandwidth, energy, account creation), in sun.
    pub fee_sun: i64,
    /// A contract call's outcome (SUCCESS, REVERT, OUT_OF_ENERGY, ...); `None` for a TRX transfer.
    pub result: Option<String>,
    pub failed: bool,
    /// The watched token's `Transfer`s in it.
    pub transfers: Vec<SolidTransfer>,
    pub solidified: Solidified,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{encode_transfer_log, TransferLog};

    fn token() -> TronAddress {
        "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t".parse().unwrap()
    }

    fn info(logs: Value) -> InfoJson {
        parse(
            "receipt",
            json!({ "id": "ab".repeat(32), "blockNumber": 9, "blockTimeStamp": 1000, "log": logs }),
        )
        .unwrap()
    }

    fn transfer_log(contract: &TronAddress, amount: u64) -> Value {
        let (topics, data) = encode_transfer_log(&TransferLog {
            from: token(),
            to: "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH".parse().unwrap(),
            amount,
        });
        json!({
            "address": hex::encode(contract.evm_bytes()),
            "topics": topics.iter().map(hex::encode).collect::<Vec<_>>(),
            "data": hex::encode(data),
        })
    }

    #[test]
    fn only_the_tokens_transfer_logs_count_with_their_log_index() {
        let lookalike: TronAddress = "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf".parse().unwrap();
        let receipt = info(json!([
            transfer_log(&lookalike, 5),
            transfer_log(&token(), 7),
            transfer_log(&token(), 8)
        ]));
        let found = transfers_of(&receipt, &token()).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].log_index, found[0].amount), (1, 7));
        assert_eq!((found[1].log_index, found[1].amount), (2, 8));
        assert_eq!(found[0].block_number, 9);
    }

    #[test]
    fn a_receipt_missing_a_field_is_an_error_not_a_zero() {
        for missing in ["id", "blockNumber", "blockTimeStamp"] {
            let mut value = json!({ "id": "ab".repeat(32), "blockNumber": 9, "blockTimeStamp": 1000 });
            value.as_object_mut().unwrap().remove(missing);
            assert!(parse::<InfoJson>("receipt", value).is_err(), "{missing}");
        }
        let mut log = transfer_log(&token(), 7);
        log.as_object_mut().unwrap().remove("data");
        assert!(transfers_of(&info(json!([log])), &token()).is_err());
    }

    #[test]
    fn a_reverted_call_moves_nothing() {
        let mut receipt = info(json!([transfer_log(&token(), 7)]));
        receipt.result = Some("FAILED".into());
        assert!(transfers_of(&receipt, &token()).unwrap().is_empty());
    }
}
