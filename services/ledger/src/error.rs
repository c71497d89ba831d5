//! The ledger's own failures, split by what the consumer must do about them: a transient failure
//! (Postgres away, a deadlock, a cancelled statement) is retried with the batch kept in hand and costs
//! a command nothing; a deterministic failure (a constraint the engine did not foresee, a broken
//! invariant, a panic) is narrowed down to the one command that causes it, which is retried a few
//! times and then dead-lettered with a `failed` verdict.

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("transient failure: {0}")]
    Transient(String),
    #[error("{0}")]
    Deterministic(String),
}

impl From<sqlx::Error> for EngineError {
    fn from(err: sqlx::Error) -> Self {
        if is_transient(&err) {
            EngineError::Transient(err.to_string())
        } else {
            EngineError::Deterministic(format!("database refused the batch: {err}"))
        }
    }
}

/// SQLSTATE classes and codes that say "try again", not "this command is wrong": connection
/// exceptions (08), transaction rollbacks (40: serialization failure, deadlock), insufficient
/// resources (53), operator intervention (57: cancel, shutdown, cannot connect now), lock not
/// available (55P03) and system errors (58). `23505` on the inbox is not here: the engine's advisory
/// lock on the command id makes a racing redelivery wait instead of colliding.
pub fn is_transient_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58")) || code == "55P03"
}

pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_sqlstate(&code)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_of_temporary_conditions_are_transient_and_constraint_violations_are_not() {
        for code in [
            "40P01", "40001", "08006", "08001", "57014", "57P01", "57P03", "53300", "55P03", "58030",
        ] {
            assert!(is_transient_sqlstate(code), "{code} should be transient");
        }
        for code in ["23505", "23514", "23503", "22003", "42P01", "P0001", "XX000", "55000"] {
            assert!(!is_transient_sqlstate(code), "{code} should be deterministic");
        }
    }

    #[test]
    fn lost_connections_and_pool_timeouts_are_transient() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
