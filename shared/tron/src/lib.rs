//! TRON primitives used by several services. Every primitive comes from a maintained crate; this
//! crate only composes them the way TRON does.

mod address;

pub use address::{AddressError, TronAddress};

/// Mainnet USDT (TRC-20). The devnet deploys its USDT-like token at the same address, so that the
/// default configuration is right on mainnet and on the devnet alike.
pub const MAINNET_USDT_CONTRACT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
