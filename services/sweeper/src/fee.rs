//! What a sweep's USDT transfer costs the deposit address, from the chain's own prices: the energy
//! the node estimates for this very transfer (its `energy_used` plus any `energy_penalty`) times a
//! margin, at the chain's energy price, plus bandwidth when the address's free bandwidth will not
//! cover the transaction. Never a constant.

/// Bytes of a signed TRC-20 transfer and its result, for bandwidth (java-tron charges the
/// transaction's size plus 64 bytes of result).
pub const TRANSFER_BYTES: i64 = 345 + 64;

/// What the fee is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeInputs {
    /// Energy of the transfer, as estimated.
    pub energy: i64,
    /// `getEnergyFee`: sun per unit of energy.
    pub energy_price_sun: i64,
    /// `getTransactionFee`: sun per byte of bandwidth.
    pub bandwidth_price_sun: i64,
    /// Free bandwidth the address has left today; `None` for an address never activated (it gets
    /// its daily free bandwidth once the top-up creates it).
    pub free_bandwidth: Option<i64>,
    /// The margin on energy, in percent (20: 1.2 times the estimate).
    pub margin_percent: u32,
}

/// Free bandwidth a new account has a day.
const NEW_ACCOUNT_FREE_BANDWIDTH: i64 = 600;

/// The TRX (sun) the address must hold for the transfer: energy with its margin plus bandwidth.
pub fn needed_sun(inputs: FeeInputs) -> Option<i64> {
    let energy = inputs
        .energy
        .checked_mul(100 + i64::from(inputs.margin_percent))?
        .checked_add(99)?
        / 100;
    let energy_fee = energy.checked_mul(inputs.energy_price_sun)?;
    let free = inputs.free_bandwidth.unwrap_or(NEW_ACCOUNT_FREE_BANDWIDTH);
    let bandwidth_fee = if free >= TRANSFER_BYTES {
        0
    } else {
        TRANSFER_BYTES.checked_mul(inputs.bandwidth_price_sun)?
    };
    energy_fee.checked_add(bandwidth_fee)
}

/// The fee limit of the transfer: what its energy may burn at most (the estimate with its margin).
pub fn fee_limit_sun(inputs: FeeInputs) -> Option<i64> {
    needed_sun(FeeInputs {
        free_bandwidth: Some(i64::MAX),
        ..inputs
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> FeeInputs {
        FeeInputs {
            energy: 64_285,
            energy_price_sun: 100,
            bandwidth_price_sun: 1_000,
            free_bandwidth: Some(600),
            margin_percent: 20,
        }
    }

    #[test]
    fn the_fee_is_the_estimated_energy_with_its_margin_at_the_chains_price() {
        // 64,285 × 1.2 = 77,142 (rounded up) × 100 sun.
        assert_eq!(needed_sun(inputs()), Some(7_714_200));
        assert_eq!(fee_limit_sun(inputs()), Some(7_714_200));
    }

    #[test]
    fn bandwidth_is_paid_only_when_the_free_bandwidth_is_short() {
        let short = FeeInputs {
            free_bandwidth: Some(100),
            ..inputs()
        };
        assert_eq!(needed_sun(short), Some(7_714_200 + TRANSFER_BYTES * 1_000));
        assert_eq!(
            fee_limit_sun(short),
            Some(7_714_200),
            "the fee limit covers energy only"
        );
        let new = FeeInputs {
            free_bandwidth: None,
            ..inputs()
        };
        assert_eq!(
            needed_sun(new),
            Some(7_714_200),
            "a new account gets its free bandwidth"
        );
    }

    #[test]
    fn prices_come_from_the_chain() {
        let dearer = FeeInputs {
            energy_price_sun: 420,
            ..inputs()
        };
        assert_eq!(needed_sun(dearer), Some(77_142 * 420));
        assert_eq!(
            needed_sun(FeeInputs {
                energy: i64::MAX,
                ..inputs()
            }),
            None,
            "overflow is no fee"
        );
    }
}
