//! The one error type of the HTTP API and its JSON shape:
//! `{"error": {"code": "<stable_snake_case>", "message": "<human text>", "details": {...}}}`.
//! Client errors carry a stable code; internal errors are logged once here and answer an opaque 500.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use guarantor_domain::{ErrorCode, Verdict};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
    cause: Option<anyhow::Error>,
}

/// The body of every error answer (documented in the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case; clients branch on it.
    #[schema(example = "invalid_transition")]
    pub code: String,
    /// For humans; may change between versions.
    pub message: String,
    /// Structured context, e.g. the field at fault or the current status.
    #[schema(value_type = Object)]
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: json!({}),
            cause: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// Postgres failed or is unreachable: 503, with the cause logged.
    pub fn database(cause: sqlx::Error) -> Self {
        Self::unavailable("the database is unavailable").with_cause(cause)
    }

    /// An unexpected failure: the client sees an opaque 500, the cause goes to the log (and Sentry).
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
        }
    }

    /// Keeps the underlying failure for the log; the client still sees only the code and message.
    pub fn with_cause(mut self, cause: impl Into<anyhow::Error>) -> Self {
        self.cause = Some(cause.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(code = self.code, error = format!("{cause:#}"), "request failed");
        }
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with Content-Type: application/json",
            ),
            JsonRejection::JsonDataError(err) => Self::validation(err.body_text()),
            JsonRejection::JsonSyntaxError(err) => Self::bad_request("malformed_json", err.body_text()),
            other => Self::bad_request("malformed_body", other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("malformed_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("malformed_query", rejection.body_text())
    }
}

/// The one mapping of the ledger's error codes to HTTP statuses.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MissingActingUser => StatusCode::BAD_REQUEST,
        ErrorCode::Forbidden | ErrorCode::NotAParty | ErrorCode::WrongParty => StatusCode::FORBIDDEN,
        ErrorCode::UserNotFound | ErrorCode::DealNotFound | ErrorCode::PaymentNotFound => StatusCode::NOT_FOUND,
        ErrorCode::InvalidTransition
        | ErrorCode::InsufficientFunds
        | ErrorCode::IdempotencyKeyReused
        | ErrorCode::DepositRejected
        | ErrorCode::PaymentNotExpirable => StatusCode::CONFLICT,
        ErrorCode::SameCustomerAndPerformer | ErrorCode::InvalidAmount | ErrorCode::ValidationFailed => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorCode::CommandFailed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status a verdict answers with.
pub fn verdict_status(verdict: &Verdict) -> StatusCode {
    match verdict {
        Verdict::Applied { .. } => StatusCode::OK,
        Verdict::Refused { rejection } | Verdict::Failed { rejection } => status_of(rejection.code),
    }
}

/// The client's answer for a verdict (an empty body where the result has none).
pub fn respond(verdict: &Verdict) -> Response {
    let status = verdict_status(verdict);
    match verdict.body() {
        Some(body) => (status, axum::Json(body)).into_response(),
        None => status.into_response(),
    }
}
