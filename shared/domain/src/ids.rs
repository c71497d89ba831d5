//! Identifier newtypes. Database ids are positive `i64`s; ids minted by the services are UUIDs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string or number is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id must be a positive integer")]
    NotPositiveInteger,
    #[error("id must be a UUID")]
    NotUuid,
}

macro_rules! serial_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
        )]
        #[serde(try_from = "i64", into = "i64")]
        #[sqlx(transparent)]
        pub struct $name(i64);

        impl $name {
            /// Wraps a database id; ids are positive.
            pub fn new(value: i64) -> Result<Self, IdError> {
                if value > 0 {
                    Ok(Self(value))
                } else {
                    Err(IdError::NotPositiveInteger)
                }
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = IdError;
            fn try_from(value: i64) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                // Only plain decimal digits: no sign, no whitespace, no leading '+'.
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IdError::NotPositiveInteger);
                }
                s.parse::<i64>().map_err(|_| IdError::NotPositiveInteger).and_then(Self::new)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7), so that ids sort roughly by creation.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7())
            }

            pub fn from_uuid(value: uuid::Uuid) -> Self {
                Self(value)
            }

            pub fn as_uuid(self) -> uuid::Uuid {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                uuid::Uuid::parse_str(s).map(Self).map_err(|_| IdError::NotUuid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

serial_id!(
    /// A tenant: one integrating platform. Every user, deal and payment belongs to exactly one.
    TenantId
);
serial_id!(
    /// A user of a tenant's platform (a customer or a performer of deals).
    UserId
);
serial_id!(
    /// A deal between a customer and a performer.
    DealId
);
serial_id!(
    /// A payment: one deposit address waiting for one user's money.
    PaymentId
);
uuid_id!(
    /// An API key's public identifier (the secret part is never stored).
    ApiKeyId
);
uuid_id!(
    /// A command accepted by the ingress and applied by the ledger.
    CommandId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_ids_accept_only_plain_positive_integers() {
        assert_eq!("42".parse::<DealId>().map(DealId::get), Ok(42));
        for bad in ["", "0", "-1", "+1", " 1", "1.0", "abc", "99999999999999999999"] {
            assert_eq!(bad.parse::<DealId>(), Err(IdError::NotPositiveInteger), "{bad:?}");
        }
    }

    #[test]
    fn serial_ids_round_trip_through_json_as_numbers() {
        let id = UserId::new(7).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "7");
        assert_eq!(serde_json::from_str::<UserId>("7").unwrap(), id);
        assert!(serde_json::from_str::<UserId>("0").is_err());
    }

    #[test]
    fn uuid_ids_parse_and_display_the_same_text() {
        let id = CommandId::generate();
        assert_eq!(id.to_string().parse::<CommandId>(), Ok(id));
        assert_eq!("nope".parse::<CommandId>(), Err(IdError::NotUuid));
    }
}
