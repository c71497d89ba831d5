//! secp256k1 keys as TRON uses them: the address is base58check(0x41 ‖ last 20 bytes of
//! keccak256(uncompressed public key without its 0x04 prefix)); a signature is 65 bytes r ‖ s ‖ v over
//! the 32-byte txID (RFC 6979 deterministic, low-s, v = recovery id 0 or 1).

use std::fmt;

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha3::{Digest, Keccak256};

use crate::TronAddress;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a private key is 32 bytes written as 64 hex digits")]
    Malformed,
    #[error("not a valid secp256k1 private key")]
    OutOfRange,
    #[error("a signature is 65 bytes (r ‖ s ‖ v)")]
    BadSignature,
    #[error("the signature does not recover to a public key")]
    Unrecoverable,
}

/// A private key. It never prints: `Debug` shows only the address.
#[derive(Clone)]
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        SigningKey::from_bytes(bytes.into())
            .map(Self)
            .map_err(|_| KeyError::OutOfRange)
    }

    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim().trim_start_matches("0x"), &mut bytes).map_err(|_| KeyError::Malformed)?;
        Self::from_bytes(&bytes)
    }

    pub(crate) fn from_signing_key(key: SigningKey) -> Self {
        Self(key)
    }

    /// Only for writing a secret store; never log it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    pub fn address(&self) -> TronAddress {
        address_of(self.0.verifying_key())
    }

    /// Signs a 32-byte digest (a txID): 65 bytes r ‖ s ‖ v.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> [u8; 65] {
        let (signature, recovery): (Signature, RecoveryId) = self
            .0
            .sign_prehash_recoverable(digest)
            .expect("signing a 32-byte digest with a valid key cannot fail");
        let (signature, recovery) = match signature.normalize_s() {
            Some(low) => (low, RecoveryId::new(!recovery.is_y_odd(), recovery.is_x_reduced())),
            None => (signature, recovery),
        };
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&signature.to_bytes());
        out[64] = recovery.to_byte();
        out
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(address {})", self.address())
    }
}

/// The address of a public key.
pub fn address_of(key: &VerifyingKey) -> TronAddress {
    let point = key.to_encoded_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    let mut account = [0u8; 20];
    account.copy_from_slice(&hash[12..]);
    TronAddress::from_evm(account)
}

/// The address that signed `digest`, from a 65-byte signature (v as 0/1 or 27/28).
pub fn recover(digest: &[u8; 32], signature: &[u8]) -> Result<TronAddress, KeyError> {
    let bytes: &[u8; 65] = signature.try_into().map_err(|_| KeyError::BadSignature)?;
    let v = match bytes[64] {
        v @ 0..=3 => v,
        v @ 27..=30 => v - 27,
        _ => return Err(KeyError::BadSignature),
    };
    let signature = Signature::from_slice(&bytes[..64]).map_err(|_| KeyError::BadSignature)?;
    let recovery = RecoveryId::from_byte(v).ok_or(KeyError::BadSignature)?;
    VerifyingKey::recover_from_prehash(digest, &signature, recovery)
        .map(|key| address_of(&key))
        .map_err(|_| KeyError::Unrecoverable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pinned from `shared/tron-vectors.md`.
    #[test]
    fn private_keys_give_the_vector_addresses() {
        for (key, address) in [
            (
                "279ff36d9bf9f305af3280034bb4187c6dd299bac6b26a3c20b999c7c0d50e6e",
                "TPX6HK2NRN4XKRX1JAhbC827bm7gMmy5w1",
            ),
            (
                "0000000000000000000000000000000000000000000000000000000000000001",
                "TMVQGm1qAQYVdetCeGRRkTWYYrLXuHK2HC",
            ),
            (
                "51d1d6047622bca92272d36b297799ecc152dc2ef91b229debf84fc41e8c73ee",
                "TVEZYjZyemfJoLUdGtzsM2ua1HAnbsNgAF",
            ),
            (
                "8888888888888888888888888888888888888888888888888888888888888888",
                "TJzXt1sZautjqXnpjQT4xSCBHNSYgBkDr3",
            ),
        ] {
            assert_eq!(PrivateKey::from_hex(key).unwrap().address().to_base58(), address);
        }
    }

    #[test]
    fn a_private_key_never_prints() {
        let key = PrivateKey::from_hex("279ff36d9bf9f305af3280034bb4187c6dd299bac6b26a3c20b999c7c0d50e6e").unwrap();
        assert!(!format!("{key:?}").contains("279ff36d"));
    }

    #[test]
    fn zero_and_malformed_keys_are_refused() {
        assert_eq!(
            PrivateKey::from_hex(&"00".repeat(32)).unwrap_err(),
            KeyError::OutOfRange
        );
        assert_eq!(PrivateKey::from_hex("abc").unwrap_err(), KeyError::Malformed);
    }

    proptest! {
        #[test]
        fn sign_then_recover_gives_the_signer(secret in prop::array::uniform32(1u8..), digest in prop::array::uniform32(any::<u8>())) {
            let key = PrivateKey::from_bytes(&secret).unwrap();
            let signature = key.sign_digest(&digest);
            prop_assert!(signature[64] <= 1);
            let s = k256::ecdsa::Signature::from_slice(&signature[..64]).unwrap();
            prop_assert!(s.normalize_s().is_none(), "low-s");
            prop_assert_eq!(recover(&digest, &signature).unwrap(), key.address());
        }
    }
}
