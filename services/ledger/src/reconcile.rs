//! Reconciliation: checks the ledger's invariants 1–4 from the data alone. Run by `guarantor
//! reconcile` and by the tests after every scenario.

use serde::Serialize;
use sqlx::PgPool;

/// One broken invariant, described for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: u8,
    pub detail: String,
}

/// Every violation found; empty when the books are consistent.
pub async fn check(pool: &PgPool) -> sqlx::Result<Vec<Violation>> {
    let mut violations = Vec::new();
    let mut found = |invariant: u8, rows: Vec<String>| {
        violations.extend(rows.into_iter().map(|detail| Violation { invariant, detail }));
    };

    // 1. Per currency, the balances of all accounts add up to zero.
    found(
        1,
        sqlx::query_scalar!(
            r#"SELECT format('currency %s: accounts sum to %s', currency, sum(balance)) AS "detail!"
             FROM accounts GROUP BY currency HAVING sum(balance) <> 0"#,
        )
        .fetch_all(pool)
        .await?,
    );
    // Every account's balance is the sum of its transfers (so the running balances can be trusted).
    found(
        1,
        sqlx::query_scalar!(
            r#"SELECT format('account %s: balance %s but transfers sum to %s', a.id, a.balance, COALESCE(t.net, 0)) AS "detail!"
             FROM accounts a
             LEFT JOIN (SELECT account, sum(delta) AS net FROM (
                          SELECT credit_account_id AS account, amount AS delta FROM transfers
                          UNION ALL SELECT debit_account_id, -amount FROM transfers) moves
                        GROUP BY account) t ON t.account = a.id
             WHERE a.balance <> COALESCE(t.net, 0)"#,
        )
        .fetch_all(pool)
        .await?,
    );
    // 2. No user's available balance (and no escrow) is negative.
    found(
        2,
        sqlx::query_scalar!(
            r#"SELECT format('account %s (%s) is negative: %s', id, kind, balance) AS "detail!"
             FROM accounts WHERE kind IN ('user_available', 'deal_escrow') AND balance < 0"#,
        )
        .fetch_all(pool)
        .await?,
    );
    // 3. A deal's escrow holds its amount while funded, and nothing otherwise.
    found(
        3,
        sqlx::query_scalar!(
            r#"SELECT format('deal %s in status %s: escrow holds %s of %s', d.id, d.status, COALESCE(e.balance, 0), d.amount) AS "detail!"
             FROM deals d LEFT JOIN accounts e ON e.kind = 'deal_escrow' AND e.deal_id = d.id
             WHERE COALESCE(e.balance, 0) <> CASE WHEN d.status IN ('confirm_performer', 'confirmed', 'dispute')
                                                  THEN d.amount ELSE 0 END"#,
        )
        .fetch_all(pool)
        .await?,
    );
    // What a user holds (kept on their available account) is the escrow of their funded deals.
    found(
        3,
        sqlx::query_scalar!(
            r#"SELECT format('user %s holds %s %s on their account but %s in funded deals',
                             COALESCE(a.user_id, f.customer_id), COALESCE(a.held, 0),
                             COALESCE(a.currency, f.currency), COALESCE(f.held, 0)) AS "detail!"
             FROM (SELECT user_id, currency, held FROM accounts WHERE kind = 'user_available') a
             FULL JOIN (SELECT d.customer_id, d.currency, sum(e.balance) AS held
                        FROM deals d JOIN accounts e ON e.kind = 'deal_escrow' AND e.deal_id = d.id
                        WHERE d.status IN ('confirm_performer', 'confirmed', 'dispute')
                        GROUP BY 1, 2) f ON f.customer_id = a.user_id AND f.currency = a.currency
             WHERE COALESCE(a.held, 0) <> COALESCE(f.held, 0)"#,
        )
        .fetch_all(pool)
        .await?,
    );
    // 4. A command's effect exists at most once: no command moved money more than its rules allow.
    found(
        4,
        sqlx::query_scalar!(
            r#"SELECT format('deal %s: %s %s transfers', deal_id, count(*), kind) AS "detail!"
             FROM transfers WHERE deal_id IS NOT NULL
             GROUP BY deal_id, kind HAVING count(*) > 1"#,
        )
        .fetch_all(pool)
        .await?,
    );
    found(
        4,
        sqlx::query_scalar!(
            r#"SELECT format('command %s: %s adjustment transfers', command_id, count(*)) AS "detail!"
             FROM transfers WHERE kind = 'adjustment' GROUP BY command_id HAVING count(*) > 1"#,
        )
        .fetch_all(pool)
        .await?,
    );
    // Every deposit transfer belongs to exactly one credited deposit of the same amount, to the
    // payment's user (the unique (txid, log_index) of `deposits` makes each credited at most once).
    found(
        4,
        sqlx::query_scalar!(
            r#"SELECT format('transfer %s: a deposit transfer without its deposit', t.id) AS "detail!"
             FROM transfers t LEFT JOIN deposits d ON d.transfer_id = t.id
             WHERE t.kind = 'deposit' AND d.id IS NULL
             UNION ALL
             SELECT format('deposit %s:%s: credited %s but its transfer moved %s to account %s',
                           d.txid, d.log_index, d.amount, t.amount, t.credit_account_id)
             FROM deposits d JOIN transfers t ON t.id = d.transfer_id
             JOIN payments p ON p.id = d.payment_id
             JOIN accounts a ON a.id = t.credit_account_id
             WHERE t.kind <> 'deposit' OR t.amount <> d.amount OR a.user_id IS DISTINCT FROM p.user_id
             UNION ALL
             SELECT format('payment %s: received %s but its deposits sum to %s', p.id, p.received,
                           COALESCE(sum(d.amount), 0))
             FROM payments p LEFT JOIN deposits d ON d.payment_id = p.id
             GROUP BY p.id HAVING p.received <> COALESCE(sum(d.amount), 0)"#,
        )
        .fetch_all(pool)
        .await?,
    );
    Ok(violations)
}
