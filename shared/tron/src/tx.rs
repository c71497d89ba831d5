//! Transactions: built locally from a reference block (TaPoS), identified by txID = sha256(raw bytes),
//! signed over the txID. A transaction built by a node is decoded and checked field by field against
//! what was asked for before it is signed.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::abi;
use crate::keys::PrivateKey;
use crate::proto::{
    Any, Contract, Transaction, TransactionRaw, TransferContract, TriggerSmartContract, TRANSFER_CONTRACT,
    TRANSFER_TYPE_URL, TRIGGER_SMART_CONTRACT, TRIGGER_TYPE_URL,
};
use crate::TronAddress;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("raw data is not a TRON transaction: {0}")]
    Undecodable(String),
    #[error("the transaction has {0} contracts; expected exactly one")]
    ContractCount(usize),
    #[error("the {field} of the transaction is not what was asked for")]
    Mismatch { field: &'static str },
}

/// The reference block a transaction is pinned to (TaPoS) and its time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxHeader {
    /// Bytes 6..8 of the reference block's number (big-endian).
    pub ref_block_bytes: [u8; 2],
    /// Bytes 8..16 of the reference block's id.
    pub ref_block_hash: [u8; 8],
    pub timestamp_ms: i64,
    pub expiration_ms: i64,
}

impl TxHeader {
    /// A header referencing block `number` with id `block_id`, valid for `lifetime_ms` from `now_ms`.
    pub fn from_block(number: i64, block_id: &[u8; 32], now_ms: i64, lifetime_ms: i64) -> Self {
        let number = number.to_be_bytes();
        let mut ref_block_hash = [0u8; 8];
        ref_block_hash.copy_from_slice(&block_id[8..16]);
        Self {
            ref_block_bytes: [number[6], number[7]],
            ref_block_hash,
            timestamp_ms: now_ms,
            expiration_ms: now_ms + lifetime_ms,
        }
    }

    fn raw(&self, contract: Contract, fee_limit: i64) -> TransactionRaw {
        TransactionRaw {
            ref_block_bytes: self.ref_block_bytes.to_vec(),
            ref_block_hash: self.ref_block_hash.to_vec(),
            expiration: self.expiration_ms,
            contract: vec![contract],
            timestamp: self.timestamp_ms,
            fee_limit,
            ..Default::default()
        }
    }
}

/// A TRX transfer of `amount_sun` from `owner` to `to`.
pub fn trx_transfer(header: &TxHeader, owner: &TronAddress, to: &TronAddress, amount_sun: i64) -> TransactionRaw {
    let parameter = TransferContract {
        owner_address: owner.as_bytes().to_vec(),
        to_address: to.as_bytes().to_vec(),
        amount: amount_sun,
    };
    let contract = Contract {
        r#type: TRANSFER_CONTRACT,
        parameter: Some(Any {
            type_url: TRANSFER_TYPE_URL.to_owned(),
            value: parameter.encode_to_vec(),
        }),
        ..Default::default()
    };
    header.raw(contract, 0)
}

/// A TRC-20 `transfer(to, amount)` on `token`, paying at most `fee_limit_sun` for energy.
pub fn trc20_transfer(
    header: &TxHeader,
    owner: &TronAddress,
    token: &TronAddress,
    to: &TronAddress,
    amount: u64,
    fee_limit_sun: i64,
) -> TransactionRaw {
    contract_call(header, owner, token, abi::encode_transfer(to, amount), fee_limit_sun)
}

/// A smart contract call with ABI-encoded `data`, paying at most `fee_limit_sun` for energy.
pub fn contract_call(
    header: &TxHeader,
    owner: &TronAddress,
    contract: &TronAddress,
    data: Vec<u8>,
    fee_limit_sun: i64,
) -> TransactionRaw {
    let parameter = TriggerSmartContract {
        owner_address: owner.as_bytes().to_vec(),
        contract_address: contract.as_bytes().to_vec(),
        data,
        ..Default::default()
    };
    let contract = Contract {
        r#type: TRIGGER_SMART_CONTRACT,
        parameter: Some(Any {
            type_url: TRIGGER_TYPE_URL.to_owned(),
            value: parameter.encode_to_vec(),
        }),
        ..Default::default()
    };
    header.raw(contract, fee_limit_sun)
}

pub fn txid(raw_bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(raw_bytes).into()
}

/// A signed transaction: its raw bytes (what was signed), txID and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    pub raw_bytes: Vec<u8>,
    pub txid: [u8; 32],
    pub signature: [u8; 65],
}

impl SignedTransaction {
    /// The `Transaction` protobuf, as `/wallet/broadcasthex` takes it.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TxError> {
        let raw =
            TransactionRaw::decode(self.raw_bytes.as_slice()).map_err(|err| TxError::Undecodable(err.to_string()))?;
        Ok(Transaction {
            raw_data: Some(raw),
            signature: vec![self.signature.to_vec()],
            ret: Vec::new(),
        }
        .encode_to_vec())
    }

    pub fn txid_hex(&self) -> String {
        hex::encode(self.txid)
    }
}

/// Signs raw transaction bytes exactly as given (the txID is over these bytes).
pub fn sign(raw_bytes: Vec<u8>, key: &PrivateKey) -> SignedTransaction {
    let txid = txid(&raw_bytes);
    let signature = key.sign_digest(&txid);
    SignedTransaction {
        raw_bytes,
        txid,
        signature,
    }
}

/// What a TRC-20 transfer must be, to check a node-built transaction against before signing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedTrc20Transfer {
    pub owner: TronAddress,
    pub token: TronAddress,
    pub to: TronAddress,
    pub amount: u64,
    pub fee_limit_sun: i64,
}

/// Decodes raw transaction bytes and checks owner, contract, selector, recipient, amount and fee limit.
pub fn verify_trc20_transfer(raw_bytes: &[u8], expected: &ExpectedTrc20Transfer) -> Result<TransactionRaw, TxError> {
    let raw = TransactionRaw::decode(raw_bytes).map_err(|err| TxError::Undecodable(err.to_string()))?;
    let [contract] = raw.contract.as_slice() else {
        return Err(TxError::ContractCount(raw.contract.len()));
    };
    let parameter = contract.parameter.as_ref().ok_or(TxError::Mismatch {
        field: "contract parameter",
    })?;
    if contract.r#type != TRIGGER_SMART_CONTRACT || parameter.type_url != TRIGGER_TYPE_URL {
        return Err(TxError::Mismatch { field: "contract type" });
    }
    let call = TriggerSmartContract::decode(parameter.value.as_slice())
        .map_err(|err| TxError::Undecodable(err.to_string()))?;
    let check = |ok: bool, field: &'static str| if ok { Ok(()) } else { Err(TxError::Mismatch { field }) };
    check(call.owner_address == expected.owner.as_bytes(), "owner")?;
    check(call.contract_address == expected.token.as_bytes(), "token contract")?;
    check(call.call_value == 0 && call.call_token_value == 0, "call value")?;
    let (to, amount) = abi::decode_transfer(&call.data).map_err(|_| TxError::Mismatch { field: "selector" })?;
    check(to == expected.to, "recipient")?;
    check(amount == expected.amount, "amount")?;
    check(raw.fee_limit == expected.fee_limit_sun, "fee limit")?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OWNER_KEY: &str = "279ff36d9bf9f305af3280034bb4187c6dd299bac6b26a3c20b999c7c0d50e6e";
    const RAW_HEX: &str = "0a0264312208212a13dbe72ac5c040c7f89586fd325aae01081f12a9010a31747970652e676f6f676c65617069732e636f6d2f70726f746f636f6c2e54726967676572536d617274436f6e747261637412740a154194a15629b2b2bbd3a5453e6d6696b2875278633b12154154e24764f19b0450d49d4b66270da289666cf82a2244a9059cbb0000000000000000000000003c9b65b212316904572826240224750eccce29a2000000000000000000000000000000000000000000000000000000000000000170e7a39286fd32900180e1eb17";

    fn header(timestamp_ms: i64, expiration_ms: i64) -> TxHeader {
        TxHeader {
            ref_block_bytes: [0x64, 0x31],
            ref_block_hash: [0x21, 0x2a, 0x13, 0xdb, 0xe7, 0x2a, 0xc5, 0xc0],
            timestamp_ms,
            expiration_ms,
        }
    }

    fn expected() -> ExpectedTrc20Transfer {
        ExpectedTrc20Transfer {
            owner: "TPX6HK2NRN4XKRX1JAhbC827bm7gMmy5w1".parse().unwrap(),
            token: "THi2qJf6XmvTJSpZHc17HgQsmJop6kb3ia".parse().unwrap(),
            to: "TFVfhkyJAULWQbHMgVfgbkmgeGBkHo5zru".parse().unwrap(),
            amount: 1,
            fee_limit_sun: 50_000_000,
        }
    }

    /// Pinned from `shared/tron-vectors.md`: the offline TRC-20 transfer, byte for byte.
    #[test]
    fn the_trc20_vector_is_built_hashed_and_signed_byte_for_byte() {
        let e = expected();
        let raw = trc20_transfer(
            &header(1_751_554_232_807, 1_751_554_292_807),
            &e.owner,
            &e.token,
            &e.to,
            1,
            50_000_000,
        );
        let bytes = raw.encode_to_vec();
        assert_eq!(hex::encode(&bytes), RAW_HEX);
        let signed = sign(bytes, &PrivateKey::from_hex(OWNER_KEY).unwrap());
        assert_eq!(
            signed.txid_hex(),
            "cc0928c7734c9c9cc8e8e9636c3ad47308197f4b42fce6b93eb6fa4b3247b58f"
        );
        assert_eq!(
            hex::encode(&signed.signature[..64]),
            "927d81654059eeb69eaccc831a50042f9a8df27c7dd0673e054aa3234c207ca11971db58181ecc9b299d8ee8d3a0a54888d7c613ae8fac74bb8fecfda11f7184"
        );
        assert_eq!(signed.signature[64], 1);
    }

    /// Pinned from `shared/tron-vectors.md`: the TRX transfer of 1 sun.
    #[test]
    fn the_trx_transfer_vector_has_the_pinned_txid() {
        let e = expected();
        let raw = trx_transfer(&header(1_751_466_432_131, 1_751_466_492_131), &e.owner, &e.to, 1);
        assert_eq!(
            hex::encode(txid(&raw.encode_to_vec())),
            "c93cdd6b4d9f5b3c617060ea0a9c7b6080d9855f599cc987f69105a5e3e9c9b4"
        );
    }

    #[test]
    fn the_vector_verifies_and_a_tampered_one_is_refused_before_signing() {
        let bytes = hex::decode(RAW_HEX).unwrap();
        assert!(verify_trc20_transfer(&bytes, &expected()).is_ok());
        for (field, changed) in [
            (
                "recipient",
                ExpectedTrc20Transfer {
                    to: "TMVQGm1qAQYVdetCeGRRkTWYYrLXuHK2HC".parse().unwrap(),
                    ..expected()
                },
            ),
            (
                "amount",
                ExpectedTrc20Transfer {
                    amount: 2,
                    ..expected()
                },
            ),
            (
                "fee limit",
                ExpectedTrc20Transfer {
                    fee_limit_sun: 1,
                    ..expected()
                },
            ),
            (
                "owner",
                ExpectedTrc20Transfer {
                    owner: "TMVQGm1qAQYVdetCeGRRkTWYYrLXuHK2HC".parse().unwrap(),
                    ..expected()
                },
            ),
            (
                "token contract",
                ExpectedTrc20Transfer {
                    token: "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t".parse().unwrap(),
                    ..expected()
                },
            ),
        ] {
            assert_eq!(
                verify_trc20_transfer(&bytes, &changed),
                Err(TxError::Mismatch { field })
            );
        }
    }

    proptest! {
        /// Any single-byte change to the raw data is refused or changes what is checked.
        #[test]
        fn a_tampered_raw_data_hex_is_refused(position in 0usize..RAW_HEX.len() / 2, flip in 1u8..=255) {
            let mut bytes = hex::decode(RAW_HEX).unwrap();
            bytes[position] ^= flip;
            let verdict = verify_trc20_transfer(&bytes, &expected());
            // Only bytes outside the checked fields (ref block, timestamps) may still verify.
            if verdict.is_ok() {
                let raw = TransactionRaw::decode(bytes.as_slice()).unwrap();
                let original = TransactionRaw::decode(hex::decode(RAW_HEX).unwrap().as_slice()).unwrap();
                prop_assert_eq!(raw.contract, original.contract);
                prop_assert_eq!(raw.fee_limit, original.fee_limit);
            }
        }
    }
}
