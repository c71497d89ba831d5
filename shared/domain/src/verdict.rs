//! What the ledger decided about a command, in domain terms: applied (with the result the client
//! sees), refused (a stable error code; nothing changed) or failed (dead-lettered after repeated
//! failures without a verdict). The ledger never speaks HTTP: the ingress maps each [`ErrorCode`] to a
//! status in one place.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::CommandId;

/// Every code the ledger can refuse or fail a command with. Stable: clients match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    UserNotFound,
    DealNotFound,
    SameCustomerAndPerformer,
    InvalidAmount,
    ValidationFailed,
    MissingActingUser,
    Forbidden,
    NotAParty,
    WrongParty,
    InvalidTransition,
    InsufficientFunds,
    IdempotencyKeyReused,
    /// The command was dead-lettered: the ledger could not apply it (an operator can re-drive it).
    CommandFailed,
    PaymentNotFound,
    /// A deposit observation that does not match its payment (address, token) or was credited under
    /// another observation already.
    DepositRejected,
    /// An expiry for a payment that received something, or whose deadline has not passed.
    PaymentNotExpirable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::UserNotFound,
        ErrorCode::DealNotFound,
        ErrorCode::SameCustomerAndPerformer,
        ErrorCode::InvalidAmount,
        ErrorCode::ValidationFailed,
        ErrorCode::MissingActingUser,
        ErrorCode::Forbidden,
        ErrorCode::NotAParty,
        ErrorCode::WrongParty,
        ErrorCode::InvalidTransition,
        ErrorCode::InsufficientFunds,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::CommandFailed,
        ErrorCode::PaymentNotFound,
        ErrorCode::DepositRejected,
        ErrorCode::PaymentNotExpirable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UserNotFound => "user_not_found",
            ErrorCode::DealNotFound => "deal_not_found",
            ErrorCode::SameCustomerAndPerformer => "same_customer_and_performer",
            ErrorCode::InvalidAmount => "invalid_amount",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::MissingActingUser => "missing_acting_user",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotAParty => "not_a_party",
            ErrorCode::WrongParty => "wrong_party",
            ErrorCode::InvalidTransition => "invalid_transition",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::CommandFailed => "command_failed",
            ErrorCode::PaymentNotFound => "payment_not_found",
            ErrorCode::DepositRejected => "deposit_rejected",
            ErrorCode::PaymentNotExpirable => "payment_not_expirable",
        }
    }

    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|candidate| candidate.as_str() == code)
    }
}

/// A refusal (or a failure): the code, a message for people, and details for programs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The documented error body.
    pub fn body(&self) -> Value {
        error_body(self.code.as_str(), &self.message, self.details.clone())
    }

    /// Reads a stored error body back.
    pub fn from_body(body: &Value) -> Result<Self, String> {
        let error = &body["error"];
        let code = error["code"]
            .as_str()
            .and_then(ErrorCode::parse)
            .ok_or_else(|| format!("stored error body has no known code: {body}"))?;
        let message = error["message"]
            .as_str()
            .ok_or_else(|| format!("stored error body has no message: {body}"))?;
        Ok(Self {
            code,
            message: message.to_owned(),
            details: error.get("details").cloned().unwrap_or_else(|| json!({})),
        })
    }
}

/// The ledger's decision about one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    /// Applied; `body` is what the client gets (none for `deny`).
    Applied { body: Option<Value> },
    /// Refused: nothing changed.
    Refused { rejection: Rejection },
    /// Given up on after repeated failures; the message is in `GUARANTOR_DLQ`.
    Failed { rejection: Rejection },
}

impl Verdict {
    pub fn refused(rejection: Rejection) -> Self {
        Verdict::Refused { rejection }
    }

    /// How the verdict is stored (`commands.outcome`).
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Applied { .. } => "applied",
            Verdict::Refused { .. } => "refused",
            Verdict::Failed { .. } => "failed",
        }
    }

    /// The body the client sees: the result, or the error in the documented shape.
    pub fn body(&self) -> Option<Value> {
        self.body_ref().map(Cow::into_owned)
    }

    /// [`body`](Self::body) without copying a result.
    pub fn body_ref(&self) -> Option<Cow<'_, Value>> {
        match self {
            Verdict::Applied { body } => body.as_ref().map(Cow::Borrowed),
            Verdict::Refused { rejection } | Verdict::Failed { rejection } => Some(Cow::Owned(rejection.body())),
        }
    }

    /// Reads a stored verdict (`commands.outcome`, `commands.body`) back.
    pub fn from_stored(kind: &str, body: Option<Value>) -> Result<Self, String> {
        let rejection = || {
            body.as_ref()
                .ok_or_else(|| format!("stored {kind} verdict has no body"))
                .and_then(Rejection::from_body)
        };
        match kind {
            "applied" => Ok(Verdict::Applied { body }),
            "refused" => Ok(Verdict::Refused {
                rejection: rejection()?,
            }),
            "failed" => Ok(Verdict::Failed {
                rejection: rejection()?,
            }),
            other => Err(format!("unknown stored verdict {other:?}")),
        }
    }
}

/// The ledger's answer to the issuing ingress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandReply {
    pub command_id: CommandId,
    /// The fingerprint of the message answered: a reused key with another request shares the
    /// command id but not this.
    pub fingerprint: String,
    pub verdict: Verdict,
}

/// The documented error body, shared by the ingress and the ledger.
pub fn error_body(code: &str, message: &str, details: Value) -> Value {
    json!({ "error": { "code": code, "message": message, "details": details } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_from_its_wire_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }

    #[test]
    fn a_stored_verdict_reads_back_as_it_was_written() {
        let verdicts = [
            Verdict::Applied { body: None },
            Verdict::Applied {
                body: Some(json!({"deal_id": 1})),
            },
            Verdict::refused(
                Rejection::new(ErrorCode::InvalidTransition, "cannot close").with_details(json!({"status": "created"})),
            ),
            Verdict::Failed {
                rejection: Rejection::new(ErrorCode::CommandFailed, "gave up"),
            },
        ];
        for verdict in verdicts {
            assert_eq!(Verdict::from_stored(verdict.kind(), verdict.body()).unwrap(), verdict);
        }
        assert!(Verdict::from_stored("refused", None).is_err());
        assert!(Verdict::from_stored("refused", Some(json!({"error": {"code": "nope", "message": "m"}}))).is_err());
        assert!(Verdict::from_stored("maybe", None).is_err());
    }
}
