//! Field checks shared by the routes; each failure is a 422 naming the field.

use guarantor_domain::{Amount, Currency, RawAmount, UserId};
use rust_decimal::Decimal;
use serde_json::json;

use crate::error::ApiError;

pub fn text(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    // Postgres text cannot hold NUL; refused here rather than failing in the ledger.
    if value.contains('\0') {
        return Err(ApiError::validation(format!("{field} must not contain NUL characters"))
            .with_details(json!({ "field": field })));
    }
    let length = value.chars().count();
    if (min..=max).contains(&length) {
        Ok(())
    } else {
        Err(
            ApiError::validation(format!("{field} must be {min} to {max} characters"))
                .with_details(json!({ "field": field, "length": length })),
        )
    }
}

pub fn currency(field: &'static str, code: &str) -> Result<Currency, ApiError> {
    code.parse().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_currency",
            format!("currency {code:?} is not supported"),
        )
        .with_details(json!({ "field": field, "supported": Currency::ALL }))
    })
}

pub fn amount(field: &'static str, raw: RawAmount, currency: Currency, max: Decimal) -> Result<Amount, ApiError> {
    Amount::new(raw, currency, max).map_err(|err| invalid_amount(field, &err.to_string()))
}

fn invalid_amount(field: &'static str, message: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_amount",
        format!("{field}: {message}"),
    )
    .with_details(json!({ "field": field }))
}

/// A signed, non-zero amount (an adjustment) within the currency's decimals and the maximum.
pub fn signed_amount(
    field: &'static str,
    raw: RawAmount,
    currency: Currency,
    max: Decimal,
) -> Result<Decimal, ApiError> {
    let value = raw.value().normalize();
    if value.is_zero() {
        return Err(invalid_amount(field, "must not be zero"));
    }
    let magnitude =
        RawAmount::parse(&value.abs().to_string()).map_err(|err| invalid_amount(field, &err.to_string()))?;
    let magnitude = amount(field, magnitude, currency, max)?;
    Ok(if value.is_sign_negative() {
        -magnitude.value()
    } else {
        magnitude.value()
    })
}

pub fn user_id(field: &'static str, value: i64) -> Result<UserId, ApiError> {
    UserId::new(value).map_err(|_| {
        ApiError::validation(format!("{field} must be a positive integer")).with_details(json!({ "field": field }))
    })
}
