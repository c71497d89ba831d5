//! java-tron's JSON forms: transactions, blocks, receipts and accounts, in both address forms
//! (`visible: true` → base58, else 41-prefixed hex), with zero-valued fields omitted as java-tron's
//! protobuf printer does; and the reverse, transactions from JSON as SDKs send them.

use guarantor_tron::proto::{
    Any, Contract, Transaction, TransactionRaw, TransferContract, TriggerSmartContract, TRANSFER_CONTRACT,
    TRANSFER_TYPE_URL, TRIGGER_SMART_CONTRACT, TRIGGER_TYPE_URL,
};
use guarantor_tron::{tx, TronAddress};
use prost::Message;
use serde_json::{json, Map, Value};

use crate::chain::{Block, Chain, Receipt, TxRecord};

pub fn address(bytes: &[u8], visible: bool) -> Value {
    match <[u8; 21]>::try_from(bytes)
        .ok()
        .and_then(|b| TronAddress::from_bytes(b).ok())
    {
        Some(address) if visible => json!(address.to_base58()),
        Some(address) => json!(address.to_hex()),
        None => json!(hex::encode(bytes)),
    }
}

fn insert_nonzero(map: &mut Map<String, Value>, key: &str, value: i64) {
    if value != 0 {
        map.insert(key.to_owned(), json!(value));
    }
}

fn contract_json(contract: &Contract, visible: bool) -> Value {
    let parameter = contract.parameter.clone().unwrap_or_default();
    let (name, value) = match contract.r#type {
        TRANSFER_CONTRACT => {
            let transfer = TransferContract::decode(parameter.value.as_slice()).unwrap_or_default();
            let mut value = Map::new();
            insert_nonzero(&mut value, "amount", transfer.amount);
            value.insert("owner_address".into(), address(&transfer.owner_address, visible));
            value.insert("to_address".into(), address(&transfer.to_address, visible));
            ("TransferContract", Value::Object(value))
        }
        TRIGGER_SMART_CONTRACT => {
            let call = TriggerSmartContract::decode(parameter.value.as_slice()).unwrap_or_default();
            let mut value = Map::new();
            if !call.data.is_empty() {
                value.insert("data".into(), json!(hex::encode(&call.data)));
            }
            value.insert("owner_address".into(), address(&call.owner_address, visible));
            value.insert("contract_address".into(), address(&call.contract_address, visible));
            insert_nonzero(&mut value, "call_value", call.call_value);
            insert_nonzero(&mut value, "call_token_value", call.call_token_value);
            insert_nonzero(&mut value, "token_id", call.token_id);
            ("TriggerSmartContract", Value::Object(value))
        }
        _ => ("UnknownContract", json!({})),
    };
    let mut out = json!({
        "parameter": { "value": value, "type_url": parameter.type_url },
        "type": name,
    });
    if contract.permission_id != 0 {
        out["Permission_id"] = json!(contract.permission_id);
    }
    out
}

pub fn raw_json(raw: &TransactionRaw, visible: bool) -> Value {
    let mut out = Map::new();
    out.insert(
        "contract".into(),
        Value::Array(raw.contract.iter().map(|c| contract_json(c, visible)).collect()),
    );
    out.insert("ref_block_bytes".into(), json!(hex::encode(&raw.ref_block_bytes)));
    out.insert("ref_block_hash".into(), json!(hex::encode(&raw.ref_block_hash)));
    insert_nonzero(&mut out, "expiration", raw.expiration);
    insert_nonzero(&mut out, "fee_limit", raw.fee_limit);
    insert_nonzero(&mut out, "timestamp", raw.timestamp);
    if !raw.data.is_empty() {
        out.insert("data".into(), json!(hex::encode(&raw.data)));
    }
    Value::Object(out)
}

/// A transaction as `/wallet/gettransactionbyid` and blocks show it.
pub fn transaction_json(transaction: &Transaction, receipt: Option<&Receipt>, visible: bool) -> Value {
    let raw = transaction.raw_data.clone().unwrap_or_default();
    let raw_bytes = raw.encode_to_vec();
    let mut out = json!({
        "visible": visible,
        "txID": hex::encode(tx::txid(&raw_bytes)),
        "raw_data": raw_json(&raw, visible),
        "raw_data_hex": hex::encode(&raw_bytes),
    });
    if !transaction.signature.is_empty() {
        out["signature"] = json!(transaction.signature.iter().map(hex::encode).collect::<Vec<_>>());
    }
    if let Some(receipt) = receipt {
        out["ret"] = json!([{ "contractRet": receipt.result.clone().unwrap_or_else(|| "SUCCESS".to_owned()) }]);
    }
    out
}

pub fn record_json(record: &TxRecord, visible: bool) -> Value {
    transaction_json(&record.transaction(), record.receipt.as_ref(), visible)
}

pub fn block_json(chain: &Chain, block: &Block, visible: bool) -> Value {
    let witness = crate::chain::genesis_key().address();
    let mut out = json!({
        "blockID": block.id,
        "block_header": {
            "raw_data": {
                "number": block.number,
                "txTrieRoot": "0".repeat(64),
                "witness_address": if visible { json!(witness.to_base58()) } else { json!(witness.to_hex()) },
                "parentHash": block.parent,
                "version": 30,
                "timestamp": block.timestamp,
            },
            "witness_signature": "",
        },
    });
    if block.number == 0 {
        out["block_header"]["raw_data"]
            .as_object_mut()
            .map(|raw| raw.remove("number"));
    }
    if !block.txids.is_empty() {
        out["transactions"] = Value::Array(
            block
                .txids
                .iter()
                .filter_map(|id| chain.txs.get(id))
                .map(|r| record_json(r, visible))
                .collect(),
        );
    }
    out
}

/// `/wallet/gettransactioninfobyid`: `{}` until a block includes the transaction.
pub fn receipt_json(chain: &Chain, txid: &str, record: &TxRecord) -> Value {
    let (Some(number), Some(receipt)) = (record.block, record.receipt.as_ref()) else {
        return json!({});
    };
    let timestamp = chain.block(number).map(|b| b.timestamp).unwrap_or_default();
    let mut inner = Map::new();
    insert_nonzero(&mut inner, "energy_fee", receipt.energy_fee);
    insert_nonzero(&mut inner, "energy_usage_total", receipt.energy_usage_total);
    insert_nonzero(&mut inner, "net_usage", receipt.net_usage);
    insert_nonzero(&mut inner, "net_fee", receipt.net_fee);
    if let Some(result) = &receipt.result {
        inner.insert("result".into(), json!(result));
    }
    let mut out = json!({
        "id": txid,
        "blockNumber": number,
        "blockTimeStamp": timestamp,
        "contractResult": [receipt.contract_result],
        "receipt": inner,
    });
    if receipt.fee != 0 {
        out["fee"] = json!(receipt.fee);
    }
    if let Some(contract) = &receipt.contract_address {
        out["contract_address"] = json!(contract);
    }
    if !receipt.logs.is_empty() {
        out["log"] = serde_json::to_value(&receipt.logs).unwrap_or_default();
    }
    if receipt.failed {
        out["result"] = json!("FAILED");
        out["resMessage"] = json!(hex::encode(receipt.res_message.clone().unwrap_or_default()));
    }
    out
}

fn parse_address(value: &Value) -> Option<Vec<u8>> {
    let text = value.as_str()?;
    text.parse::<TronAddress>().ok().map(|a| a.as_bytes().to_vec())
}

fn hex_field(value: &Value) -> Option<Vec<u8>> {
    value
        .as_str()
        .map(|text| hex::decode(text.trim_start_matches("0x")).ok())
        .unwrap_or(Some(Vec::new()))
}

fn int_field(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

/// A contract from its JSON form (either address form).
fn contract_from_json(contract: &Value) -> Option<Contract> {
    let kind = contract["type"].as_str()?;
    let value = &contract["parameter"]["value"];
    let (r#type, type_url, bytes) = match kind {
        "TransferContract" => (
            TRANSFER_CONTRACT,
            TRANSFER_TYPE_URL,
            TransferContract {
                owner_address: parse_address(&value["owner_address"])?,
                to_address: parse_address(&value["to_address"])?,
                amount: int_field(&value["amount"]),
            }
            .encode_to_vec(),
        ),
        "TriggerSmartContract" => (
            TRIGGER_SMART_CONTRACT,
            TRIGGER_TYPE_URL,
            TriggerSmartContract {
                owner_address: parse_address(&value["owner_address"])?,
                contract_address: parse_address(&value["contract_address"])?,
                call_value: int_field(&value["call_value"]),
                data: hex_field(&value["data"])?,
                call_token_value: int_field(&value["call_token_value"]),
                token_id: int_field(&value["token_id"]),
            }
            .encode_to_vec(),
        ),
        _ => return None,
    };
    Some(Contract {
        r#type,
        parameter: Some(Any {
            type_url: type_url.to_owned(),
            value: bytes,
        }),
        permission_id: i32::try_from(int_field(&contract["Permission_id"])).unwrap_or(0),
        ..Contract::default()
    })
}

/// `raw_data` from JSON; `raw_data_hex`, when given, wins (it is what was signed).
pub fn raw_from_json(transaction: &Value) -> Option<TransactionRaw> {
    if let Some(hex_raw) = transaction["raw_data_hex"].as_str() {
        return TransactionRaw::decode(hex::decode(hex_raw).ok()?.as_slice()).ok();
    }
    let raw = &transaction["raw_data"];
    let contracts = raw["contract"]
        .as_array()?
        .iter()
        .map(contract_from_json)
        .collect::<Option<Vec<_>>>()?;
    Some(TransactionRaw {
        ref_block_bytes: hex_field(&raw["ref_block_bytes"])?,
        ref_block_hash: hex_field(&raw["ref_block_hash"])?,
        expiration: int_field(&raw["expiration"]),
        data: hex_field(&raw["data"])?,
        contract: contracts,
        timestamp: int_field(&raw["timestamp"]),
        fee_limit: int_field(&raw["fee_limit"]),
        ..TransactionRaw::default()
    })
}

/// A signed transaction from its JSON form.
pub fn transaction_from_json(transaction: &Value) -> Option<Transaction> {
    let signature = transaction["signature"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().and_then(|t| hex::decode(t).ok()))
                .collect()
        })
        .unwrap_or_default();
    Some(Transaction {
        raw_data: Some(raw_from_json(transaction)?),
        signature,
        ret: Vec::new(),
    })
}
