//! Extractors that parse requests at the edge into domain types, answering in the documented error
//! shape: 400 for malformed input (bad JSON, path id, header), 415 for a non-JSON body, 422 for
//! well-formed input with wrong types or values.

use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::Method;
use axum::Json;
use guarantor_domain::{IdError, UserId};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tower_http::request_id::RequestId;

use crate::error::ApiError;

/// A JSON body: the canonical value (for idempotency fingerprints) and the typed request.
#[derive(Debug)]
pub struct ApiJson<T> {
    pub raw: Value,
    pub body: T,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(raw) = Json::<Value>::from_request(request, state).await?;
        let body = serde_json::from_value(raw.clone()).map_err(|err| ApiError::validation(err.to_string()))?;
        Ok(Self { raw, body })
    }
}

/// The one id in the route's path, e.g. `{deal_id}`.
#[derive(Debug, Clone, Copy)]
pub struct IdPath<T>(pub T);

impl<S: Send + Sync, T: FromStr<Err = IdError>> FromRequestParts<S> for IdPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state).await?;
        text.parse().map(IdPath).map_err(|err: IdError| {
            ApiError::bad_request("invalid_id", format!("path id {text:?}: {err}"))
                .with_details(json!({ "value": text }))
        })
    }
}

/// `Acting-User`: the deal party on whose behalf the platform acts.
#[derive(Debug, Clone, Copy)]
pub struct ActingUser(pub UserId);

pub const ACTING_USER_HEADER: &str = "acting-user";
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
const IDEMPOTENCY_KEY_MAX: usize = 255;

impl<S: Send + Sync> FromRequestParts<S> for ActingUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(ACTING_USER_HEADER)
            .ok_or_else(|| ApiError::bad_request("missing_acting_user", "the Acting-User header is required"))?;
        value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .map(ActingUser)
            .ok_or_else(|| ApiError::bad_request("invalid_acting_user", "Acting-User must be a user id"))
    }
}

/// What every command needs from the request besides its body.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    /// Only POST requests take one; GET requests ignore the header.
    pub idempotency_key: Option<String>,
    /// Method and path, the route part of the idempotency fingerprint.
    pub route: String,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .map(str::to_owned);
        let idempotency_key = match (parts.method == Method::POST, parts.headers.get(IDEMPOTENCY_KEY_HEADER)) {
            (true, Some(value)) => {
                let key = value
                    .to_str()
                    .ok()
                    .filter(|key| !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_MAX)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_idempotency_key",
                            "Idempotency-Key must be 1 to 255 visible ASCII characters",
                        )
                    })?;
                Some(key.to_owned())
            }
            (true, None) | (false, _) => None,
        };
        Ok(Self {
            request_id,
            idempotency_key,
            route: format!("{} {}", parts.method, parts.uri.path().trim_end_matches('/')),
        })
    }
}
