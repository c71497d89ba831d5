//! The TRC-20 ABI the product uses: `transfer(address,uint256)`, `balanceOf(address)` and the
//! `Transfer(address,address,uint256)` event log.

use crate::TronAddress;

/// `keccak256("transfer(address,uint256)")[..4]`.
pub const TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// `keccak256("balanceOf(address)")[..4]`.
pub const BALANCE_OF_SELECTOR: [u8; 4] = [0x70, 0xa0, 0x82, 0x31];
/// `decimals()`.
pub const DECIMALS_SELECTOR: [u8; 4] = [0x31, 0x3c, 0xe5, 0x67];
/// `keccak256("Transfer(address,address,uint256)")`, topic 0 of every TRC-20 transfer log.
pub const TRANSFER_EVENT_TOPIC: [u8; 32] = [
    0xdd, 0xf2, 0x52, 0xad, 0x1b, 0xe2, 0xc8, 0x9b, 0x69, 0xc2, 0xb0, 0x68, 0xfc, 0x37, 0x8d, 0xaa, 0x95, 0x2b, 0xa7,
    0xf1, 0x63, 0xc4, 0xa1, 0x16, 0x28, 0xf5, 0x5a, 0x4d, 0xf5, 0x23, 0xb3, 0xef,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    #[error("call data is not transfer(address,uint256)")]
    NotATransfer,
    #[error("an ABI word is not a 20-byte address")]
    NotAnAddress,
    #[error("the amount does not fit in 64 bits")]
    AmountTooLarge,
    #[error("the log is not a TRC-20 Transfer")]
    NotATransferLog,
}

fn address_word(address: &TronAddress) -> [u8; 32] {
    let mut word = [0u8; 32];
    word[12..].copy_from_slice(&address.evm_bytes());
    word
}

fn amount_word(amount: u64) -> [u8; 32] {
    let mut word = [0u8; 32];
    word[24..].copy_from_slice(&amount.to_be_bytes());
    word
}

fn word_address(word: &[u8]) -> Result<TronAddress, AbiError> {
    if word.len() != 32 || word[..12].iter().any(|b| *b != 0) {
        return Err(AbiError::NotAnAddress);
    }
    let mut account = [0u8; 20];
    account.copy_from_slice(&word[12..]);
    Ok(TronAddress::from_evm(account))
}

fn word_amount(word: &[u8]) -> Result<u64, AbiError> {
    if word.len() != 32 || word[..24].iter().any(|b| *b != 0) {
        return Err(AbiError::AmountTooLarge);
    }
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&word[24..]);
    Ok(u64::from_be_bytes(bytes))
}

pub fn encode_transfer(to: &TronAddress, amount: u64) -> Vec<u8> {
    let mut data = TRANSFER_SELECTOR.to_vec();
    data.extend_from_slice(&address_word(to));
    data.extend_from_slice(&amount_word(amount));
    data
}

pub fn encode_balance_of(owner: &TronAddress) -> Vec<u8> {
    let mut data = BALANCE_OF_SELECTOR.to_vec();
    data.extend_from_slice(&address_word(owner));
    data
}

/// (recipient, amount) of `transfer(address,uint256)` call data.
pub fn decode_transfer(data: &[u8]) -> Result<(TronAddress, u64), AbiError> {
    if data.len() != 68 || data[..4] != TRANSFER_SELECTOR {
        return Err(AbiError::NotATransfer);
    }
    Ok((word_address(&data[4..36])?, word_amount(&data[36..68])?))
}

/// The owner of `balanceOf(address)` call data.
pub fn decode_balance_of(data: &[u8]) -> Result<TronAddress, AbiError> {
    if data.len() != 36 || data[..4] != BALANCE_OF_SELECTOR {
        return Err(AbiError::NotAnAddress);
    }
    word_address(&data[4..])
}

/// A `uint256` return value (e.g. of `balanceOf`) that fits in 64 bits.
pub fn decode_uint(word: &[u8]) -> Result<u64, AbiError> {
    word_amount(word)
}

/// A decoded TRC-20 `Transfer` log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLog {
    pub from: TronAddress,
    pub to: TronAddress,
    pub amount: u64,
}

/// Decodes a log's topics and data as `Transfer(address indexed from, address indexed to, uint256)`.
pub fn decode_transfer_log(topics: &[[u8; 32]], data: &[u8]) -> Result<TransferLog, AbiError> {
    match topics {
        [topic, from, to] if *topic == TRANSFER_EVENT_TOPIC => Ok(TransferLog {
            from: word_address(from)?,
            to: word_address(to)?,
            amount: word_amount(data)?,
        }),
        _ => Err(AbiError::NotATransferLog),
    }
}

/// Encodes a Transfer log as a node returns it (topics and data), for the devnet and tests.
pub fn encode_transfer_log(log: &TransferLog) -> (Vec<[u8; 32]>, Vec<u8>) {
    (
        vec![TRANSFER_EVENT_TOPIC, address_word(&log.from), address_word(&log.to)],
        amount_word(log.amount).to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha3::{Digest, Keccak256};

    #[test]
    fn selectors_and_the_event_topic_are_the_keccak_of_their_signatures() {
        assert_eq!(Keccak256::digest(b"transfer(address,uint256)")[..4], TRANSFER_SELECTOR);
        assert_eq!(Keccak256::digest(b"balanceOf(address)")[..4], BALANCE_OF_SELECTOR);
        assert_eq!(
            Keccak256::digest(b"Transfer(address,address,uint256)")[..],
            TRANSFER_EVENT_TOPIC
        );
    }

    #[test]
    fn transfer_call_data_round_trips() {
        let to: TronAddress = "TFVfhkyJAULWQbHMgVfgbkmgeGBkHo5zru".parse().unwrap();
        let data = encode_transfer(&to, 1);
        assert_eq!(
            hex::encode(&data),
            "a9059cbb0000000000000000000000003c9b65b212316904572826240224750eccce29a20000000000000000000000000000000000000000000000000000000000000001"
        );
        assert_eq!(decode_transfer(&data), Ok((to, 1)));
        assert_eq!(decode_transfer(&data[..67]), Err(AbiError::NotATransfer));
    }

    #[test]
    fn transfer_logs_round_trip_and_other_logs_are_refused() {
        let log = TransferLog {
            from: "TPX6HK2NRN4XKRX1JAhbC827bm7gMmy5w1".parse().unwrap(),
            to: "TMVQGm1qAQYVdetCeGRRkTWYYrLXuHK2HC".parse().unwrap(),
            amount: 12_500_000,
        };
        let (topics, data) = encode_transfer_log(&log);
        assert_eq!(decode_transfer_log(&topics, &data), Ok(log));
        assert_eq!(decode_transfer_log(&topics[..2], &data), Err(AbiError::NotATransferLog));
    }
}
