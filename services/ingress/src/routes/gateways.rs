//! Payment gateways the platform can create payments with.

use axum::extract::State;
use axum::Json;
use guarantor_domain::payment::USDT_TRC20_GATEWAY_ID;
use guarantor_domain::{format_wire, Currency, Role};
use serde::Serialize;

use crate::api_keys::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// Blocks after which TRON state is irreversible (2/3 of the 27 super representatives + 1).
const TRON_SOLIDIFICATION_BLOCKS: u32 = 19;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Gateway {
    #[schema(example = 1)]
    pub id: i64,
    #[schema(example = "USDT TRC-20")]
    pub name: &'static str,
    #[schema(example = "tron")]
    pub network: &'static str,
    #[schema(example = json!(["USDT"]))]
    pub currency: Vec<Currency>,
    /// The TRC-20 contract payments must be made in.
    #[schema(example = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t")]
    pub token_contract: String,
    /// Blocks a deposit waits for before it is credited (TRON's solidification).
    pub confirmations: u32,
    /// The smallest amount a payment may ask for.
    #[schema(example = "0.000001")]
    pub min_amount: String,
}

/// Lists the payment gateways.
#[utoipa::path(
    get,
    path = "/payment/gateways",
    tag = "payments",
    security(("api_key" = [])),
    responses(
        (status = 200, body = [Gateway]),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)
    )
)]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<Vec<Gateway>>, ApiError> {
    principal.require(&[Role::Platform])?;
    let currency = Currency::Usdt;
    let smallest_unit = rust_decimal::Decimal::new(1, currency.decimals());
    Ok(Json(vec![Gateway {
        id: USDT_TRC20_GATEWAY_ID,
        name: "USDT TRC-20",
        network: "tron",
        currency: vec![currency],
        token_contract: state.config.tron.usdt_contract.to_base58(),
        confirmations: TRON_SOLIDIFICATION_BLOCKS,
        min_amount: format_wire(smallest_unit, currency),
    }]))
}
