//! TRON primitives used by several services: addresses, keys, HD derivation, transactions and the
//! TRC-20 ABI. Every primitive (secp256k1, hashes, base58, BIP-32/39, protobuf) comes from a maintained
//! crate; this crate only composes them the way TRON does.

pub mod abi;
mod address;
pub mod client;
pub mod hd;
pub mod keys;
pub mod proto;
mod reply;
pub mod solid;
pub mod tx;

pub use address::{AddressError, TronAddress};
pub use hd::{DepositAddresses, HdWallet};
pub use keys::PrivateKey;

/// Mainnet USDT (TRC-20). The devnet deploys its USDT-like token at the same address, so that the
/// default configuration is right on mainnet and on the devnet alike.
pub const MAINNET_USDT_CONTRACT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
