//! A command the ledger refuses: the client gets a 4xx in the documented shape, and nothing changes.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl Rejection {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn not_found(what: &'static str, code: &'static str) -> Self {
        Self::new(404, code, format!("{what} not found"))
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(403, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }

    pub fn body(&self) -> Value {
        guarantor_domain::command::error_body(self.code, &self.message, self.details.clone())
    }
}

/// What a handler can end in besides success: a refusal (answered, nothing written) or a database
/// failure (the command is retried).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("rejected: {0:?}")]
    Rejected(Rejection),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<Rejection> for HandlerError {
    fn from(rejection: Rejection) -> Self {
        HandlerError::Rejected(rejection)
    }
}

pub type HandlerResult<T> = Result<T, HandlerError>;
