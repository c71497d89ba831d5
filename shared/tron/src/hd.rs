//! HD derivation of deposit keys: BIP-39 seed → BIP-32 → `m/44'/195'/0'/0/{index}` (TRON's coin
//! type 195). The seed never prints.

use std::fmt;

use bip32::{ChildNumber, DerivationPath, XPrv, XPub};

use crate::keys::{address_of, PrivateKey};
use crate::TronAddress;

/// The branch every deposit address is derived under; the address of payment index `i` is at
/// `{DEPOSIT_BRANCH}/{i}`.
pub const DEPOSIT_BRANCH: &str = "m/44'/195'/0'/0";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HdError {
    #[error("not a valid BIP-39 mnemonic: {0}")]
    Mnemonic(String),
    #[error("a BIP-39 seed is 16 to 64 bytes")]
    SeedLength,
    #[error("derivation failed at index {0}")]
    Derivation(u32),
}

pub struct HdWallet {
    seed: Vec<u8>,
}

impl HdWallet {
    pub fn from_mnemonic(phrase: &str, passphrase: &str) -> Result<Self, HdError> {
        let mnemonic = bip39::Mnemonic::parse_normalized(phrase).map_err(|err| HdError::Mnemonic(err.to_string()))?;
        Ok(Self {
            seed: mnemonic.to_seed(passphrase).to_vec(),
        })
    }

    pub fn from_seed(seed: &[u8]) -> Result<Self, HdError> {
        if !(16..=64).contains(&seed.len()) {
            return Err(HdError::SeedLength);
        }
        Ok(Self { seed: seed.to_vec() })
    }

    /// The key at `m/44'/195'/0'/0/{index}`.
    pub fn derive(&self, index: u32) -> Result<PrivateKey, HdError> {
        let path: DerivationPath = format!("{DEPOSIT_BRANCH}/{index}")
            .parse()
            .map_err(|_| HdError::Derivation(index))?;
        let xprv = XPrv::derive_from_path(&self.seed, &path).map_err(|_| HdError::Derivation(index))?;
        Ok(PrivateKey::from_signing_key(xprv.private_key().clone()))
    }

    /// The public half of the deposit branch: derives every deposit address, signs nothing. The
    /// services that only hand out addresses keep this, not the seed.
    pub fn deposit_addresses(&self) -> Result<DepositAddresses, HdError> {
        let path: DerivationPath = DEPOSIT_BRANCH.parse().map_err(|_| HdError::Derivation(0))?;
        let branch = XPrv::derive_from_path(&self.seed, &path).map_err(|_| HdError::Derivation(0))?;
        Ok(DepositAddresses {
            branch: branch.public_key(),
        })
    }
}

/// The extended public key of `m/44'/195'/0'/0`: deposit addresses by index, without private keys.
#[derive(Clone)]
pub struct DepositAddresses {
    branch: XPub,
}

impl DepositAddresses {
    /// The address at `m/44'/195'/0'/0/{index}` (non-hardened, so the public key derives it).
    pub fn address(&self, index: u32) -> Result<TronAddress, HdError> {
        let child = ChildNumber::new(index, false).map_err(|_| HdError::Derivation(index))?;
        let key = self
            .branch
            .derive_child(child)
            .map_err(|_| HdError::Derivation(index))?;
        Ok(address_of(key.public_key()))
    }
}

impl fmt::Debug for DepositAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DepositAddresses(m/44'/195'/0'/0)")
    }
}

impl fmt::Debug for HdWallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HdWallet([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABANDON: &str =
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    /// Pinned from `shared/tron-vectors.md`.
    #[test]
    fn the_abandon_mnemonic_derives_the_vector_keys() {
        let wallet = HdWallet::from_mnemonic(ABANDON, "").unwrap();
        for (index, address, key) in [
            (
                0,
                "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH",
                "b5a4cea271ff424d7c31dc12a3e43e401df7a40d7412a15750f3f0b6b5449a28",
            ),
            (
                1,
                "TSeJkUh4Qv67VNFwY8LaAxERygNdy6NQZK",
                "edb728e259afca2ddcc428459e7681b8414668649aedbc8d25c0872da219b2e6",
            ),
            (
                2,
                "TYJPRrdB5APNeRs4R7fYZSwW3TcrTKw2gx",
                "0e5684898be2d272d54eb2be3fd41a12f720db6358cee02c2d23043eed4bf7a2",
            ),
        ] {
            let derived = wallet.derive(index).unwrap();
            assert_eq!(derived.address().to_base58(), address);
            assert_eq!(derived.to_hex(), key);
        }
    }

    #[test]
    fn the_public_branch_derives_the_same_addresses_as_the_private_keys() {
        let wallet = HdWallet::from_mnemonic(ABANDON, "").unwrap();
        let addresses = wallet.deposit_addresses().unwrap();
        assert_eq!(
            addresses.address(0).unwrap().to_base58(),
            "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH"
        );
        for index in [0, 1, 2, 17, 1_000_000, (1 << 31) - 1] {
            assert_eq!(
                addresses.address(index).unwrap(),
                wallet.derive(index).unwrap().address()
            );
        }
        assert!(
            addresses.address(1 << 31).is_err(),
            "hardened indexes need the private key"
        );
    }

    #[test]
    fn a_bad_mnemonic_is_refused_and_the_seed_never_prints() {
        assert!(matches!(
            HdWallet::from_mnemonic("abandon abandon", ""),
            Err(HdError::Mnemonic(_))
        ));
        let wallet = HdWallet::from_mnemonic(ABANDON, "").unwrap();
        assert_eq!(format!("{wallet:?}"), "HdWallet([REDACTED])");
        assert_eq!(HdWallet::from_seed(&[1; 8]).unwrap_err(), HdError::SeedLength);
    }
}
