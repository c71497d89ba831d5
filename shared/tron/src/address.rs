//! TRON addresses: 21 bytes (0x41 ‖ 20-byte account hash), written as base58check (`T...`) or as
//! 42 hex digits (`41...`). Parsing validates the prefix and, for base58, the checksum.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const PREFIX: u8 = 0x41;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("not a TRON address: expected base58check starting with T or 42 hex digits starting with 41")]
    Malformed,
    #[error("TRON address checksum does not match")]
    BadChecksum,
    #[error("TRON address must start with byte 0x41")]
    WrongPrefix,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TronAddress([u8; 21]);

impl TronAddress {
    /// From the 21 raw bytes (prefix included).
    pub fn from_bytes(bytes: [u8; 21]) -> Result<Self, AddressError> {
        if bytes[0] == PREFIX {
            Ok(Self(bytes))
        } else {
            Err(AddressError::WrongPrefix)
        }
    }

    /// From the 20-byte account hash, as it appears in EVM words and logs.
    pub fn from_evm(account: [u8; 20]) -> Self {
        let mut bytes = [0u8; 21];
        bytes[0] = PREFIX;
        bytes[1..].copy_from_slice(&account);
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 21] {
        &self.0
    }

    /// The 20-byte account hash without the 0x41 prefix.
    pub fn evm_bytes(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out.copy_from_slice(&self.0[1..]);
        out
    }

    pub fn to_base58(&self) -> String {
        bs58::encode(self.0).with_check().into_string()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn parse_hex(text: &str) -> Result<Self, AddressError> {
        let mut bytes = [0u8; 21];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| AddressError::Malformed)?;
        Self::from_bytes(bytes)
    }

    fn parse_base58(text: &str) -> Result<Self, AddressError> {
        let decoded = bs58::decode(text)
            .with_check(None)
            .into_vec()
            .map_err(|err| match err {
                bs58::decode::Error::InvalidChecksum { .. } => AddressError::BadChecksum,
                _ => AddressError::Malformed,
            })?;
        let bytes: [u8; 21] = decoded.try_into().map_err(|_| AddressError::Malformed)?;
        Self::from_bytes(bytes)
    }
}

impl FromStr for TronAddress {
    type Err = AddressError;
    fn from_str(text: &str) -> Result<Self, AddressError> {
        let hex_form = text.strip_prefix("0x").unwrap_or(text);
        if hex_form.len() == 42 && hex_form.bytes().all(|b| b.is_ascii_hexdigit()) {
            Self::parse_hex(hex_form)
        } else if text.len() == 34 && text.starts_with('T') {
            Self::parse_base58(text)
        } else {
            Err(AddressError::Malformed)
        }
    }
}

impl fmt::Display for TronAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base58())
    }
}

impl fmt::Debug for TronAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TronAddress({})", self.to_base58())
    }
}

impl Serialize for TronAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base58())
    }
}

impl<'de> Deserialize<'de> for TronAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsing_a_formatted_address_gives_it_back(account in prop::array::uniform20(any::<u8>())) {
            let address = TronAddress::from_evm(account);
            prop_assert_eq!(address.to_base58().parse::<TronAddress>(), Ok(address));
            prop_assert_eq!(address.to_hex().parse::<TronAddress>(), Ok(address));
        }
    }

    /// Pinned from `shared/tron-vectors.md`.
    const VECTORS: [(&str, &str); 6] = [
        (
            "TPX6HK2NRN4XKRX1JAhbC827bm7gMmy5w1",
            "4194a15629b2b2bbd3a5453e6d6696b2875278633b",
        ),
        (
            "TMVQGm1qAQYVdetCeGRRkTWYYrLXuHK2HC",
            "417e5f4552091a69125d5dfcb7b8c2659029395bdf",
        ),
        (
            "TVEZYjZyemfJoLUdGtzsM2ua1HAnbsNgAF",
            "41d351c7c627ad5531edb9587f4150caf393c33e87",
        ),
        (
            "TJzXt1sZautjqXnpjQT4xSCBHNSYgBkDr3",
            "4162f94e9ac9349bccc61bfe66ddade6292702ecb6",
        ),
        (
            "T9yD14Nj9j7xAB4dbGeiX9h8unkKHxuWwb",
            "410000000000000000000000000000000000000000",
        ),
        (
            "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
            "41a614f803b6fd780986a42c78ec9c7f77e6ded13c",
        ),
    ];

    #[test]
    fn base58_and_hex_forms_of_the_vectors_name_the_same_address() {
        for (base58, hex_form) in VECTORS {
            let from_base58: TronAddress = base58.parse().unwrap();
            let from_hex: TronAddress = hex_form.parse().unwrap();
            assert_eq!(from_base58, from_hex);
            assert_eq!(from_base58.to_base58(), base58);
            assert_eq!(from_base58.to_hex(), hex_form);
        }
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        assert_eq!(
            "TPX6HK2NRN4XKRX1JAhbC827bm7gMmy5w2".parse::<TronAddress>(),
            Err(AddressError::BadChecksum)
        );
    }

    #[test]
    fn malformed_and_wrongly_prefixed_addresses_are_refused() {
        assert_eq!("".parse::<TronAddress>(), Err(AddressError::Malformed));
        assert_eq!("T123".parse::<TronAddress>(), Err(AddressError::Malformed));
        assert_eq!(
            "4294a15629b2b2bbd3a5453e6d6696b2875278633b".parse::<TronAddress>(),
            Err(AddressError::WrongPrefix)
        );
    }

    #[test]
    fn json_uses_the_base58_form() {
        let address: TronAddress = VECTORS[0].1.parse().unwrap();
        assert_eq!(
            serde_json::to_string(&address).unwrap(),
            format!("\"{}\"", VECTORS[0].0)
        );
    }
}
