//! Domain types shared by every service. Values are parsed at the edge into these types; inside the
//! system no raw `i64`, `String` or `Decimal` travels where one of them fits.

pub mod command;
pub mod deal;
mod ids;
mod money;
pub mod payment;
mod role;
pub mod verdict;

pub use command::{Command, CommandEnvelope, DisputeOpening, NewDeal};
pub use deal::{Actor, DealAction, DealStatus};
pub use ids::{ApiKeyId, CommandId, DealId, IdError, PaymentId, TenantId, UserId};
pub use money::{format_wire, Amount, AmountError, Currency, CurrencyError, RawAmount};
pub use payment::{DepositObservation, NewPayment, PaymentStatus};
pub use role::{Role, RoleError};
pub use verdict::{error_body, CommandReply, ErrorCode, Rejection, Verdict};
