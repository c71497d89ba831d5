//! End-to-end tests of payments through the HTTP API: fresh deposit addresses, idempotent creation,
//! the documented reads and refusals.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use support::System;

#[tokio::test]
async fn concurrent_payment_creations_get_distinct_addresses_and_reads_show_them() {
    let system = System::up().await;
    let user = system.user("payer").await;

    let creations = (0..20).map(|n| {
        system
            .post("/api/v1/payment")
            .json(json!({ "gateway_id": 1, "user_id": user, "amount": format!("{}.5", n + 1), "currency": "USDT" }))
            .send()
    });
    let answers = futures::future::join_all(creations).await;
    let mut addresses = BTreeSet::new();
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.body["status"], "waiting");
        assert_eq!(answer.body["received"], "0.000000");
        assert_eq!(answer.body["gateway_data"]["network"], "tron");
        let address = answer.body["gateway_data"]["address"].as_str().unwrap().to_owned();
        assert!(address.starts_with('T') && address.len() == 34, "{address}");
        addresses.insert(address);
    }
    assert_eq!(addresses.len(), 20, "every payment has its own address");
    let indexes: i64 = sqlx::query_scalar("SELECT count(DISTINCT hd_index) FROM payments")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(indexes, 20);

    let first = &answers[0].body;
    let id = first["payment_id"].as_i64().unwrap();
    for path in [format!("/api/v1/payment/{id}"), format!("/api/v1/payment/{id}/")] {
        let read = system.get(&path).send().await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text);
        assert_eq!(read.body["gateway_data"], first["gateway_data"]);
        assert_eq!(read.body["deposits"], json!([]));
        assert_eq!(read.body["amount"], first["amount"]);
    }
    let stored: Option<String> = sqlx::query_scalar("SELECT address FROM payments WHERE id = $1")
        .bind(id)
        .fetch_optional(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), first["gateway_data"]["address"].as_str());
    let columns: Vec<String> =
        sqlx::query_scalar("SELECT column_name::text FROM information_schema.columns WHERE table_name = 'payments'")
            .fetch_all(&system.db.pool)
            .await
            .unwrap();
    assert!(
        columns.iter().all(|c| !c.contains("key") && !c.contains("secret")),
        "no key material is stored: {columns:?}"
    );
    system.assert_invariants().await;
}

#[tokio::test]
async fn a_payment_retried_with_its_idempotency_key_is_the_same_payment() {
    let system = System::up().await;
    let user = system.user("payer").await;
    let body = json!({ "gateway_id": 1, "user_id": user, "amount": "10" });

    let first = system
        .post("/api/v1/payment/")
        .idempotency("pay-1")
        .json(body.clone())
        .send()
        .await;
    let again = system
        .post("/api/v1/payment/")
        .idempotency("pay-1")
        .json(body)
        .send()
        .await;
    let other = system
        .post("/api/v1/payment/")
        .idempotency("pay-1")
        .json(json!({ "gateway_id": 1, "user_id": user, "amount": "11" }))
        .send()
        .await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body, "the retry answers the first payment");
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.error_code(), "idempotency_key_reused");
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(payments, 1);
}

#[tokio::test]
async fn bad_payment_requests_are_refused_in_the_documented_shape_and_change_nothing() {
    let system = System::up().await;
    let user = system.user("payer").await;
    let cases = [
        (
            json!({ "gateway_id": 2, "user_id": user, "amount": "1" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "gateway_id": 1, "user_id": user, "amount": "0" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            json!({ "gateway_id": 1, "user_id": user, "amount": "1.0000001" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            json!({ "gateway_id": 1, "user_id": user, "amount": "1", "currency": "BTC" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_currency",
        ),
        (
            json!({ "gateway_id": 1, "user_id": 0, "amount": "1" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "gateway_id": 1, "user_id": user + 1000, "amount": "1" }),
            StatusCode::NOT_FOUND,
            "user_not_found",
        ),
        (
            json!({ "gateway_id": 1, "amount": "1" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ];
    for (body, status, code) in cases {
        let answer = system.post("/api/v1/payment").json(body.clone()).send().await;
        assert_eq!(answer.status, status, "{body}: {}", answer.text);
        assert_eq!(answer.error_code(), code, "{body}");
    }
    let arbiter = system
        .post("/api/v1/payment")
        .key(&system.dev_key("arbiter"))
        .json(json!({ "gateway_id": 1, "user_id": user, "amount": "1" }))
        .send()
        .await;
    assert_eq!(arbiter.status, StatusCode::FORBIDDEN);
    for path in ["/api/v1/payment/999999", "/api/v1/payment/abc"] {
        let answer = system.get(path).send().await;
        assert!(
            answer.status == StatusCode::NOT_FOUND || answer.status == StatusCode::BAD_REQUEST,
            "{path}"
        );
    }
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(payments, 0);
}

/// A system with a fast devnet (blocks every 200 ms, solidified 3 blocks behind) and a scanner that
/// looks every second.
async fn paying_system() -> System {
    System::start(
        &["up"],
        &[
            ("GUARANTOR_SCAN_INTERVAL_SECS", "1"),
            ("GUARANTOR_DEVNET_BLOCK_INTERVAL_MS", "200"),
            ("GUARANTOR_DEVNET_SOLIDIFY_LAG", "3"),
        ],
    )
    .await
}

async fn create_payment(system: &System, user: i64, amount: &str) -> (i64, String, String) {
    let answer = system
        .post("/api/v1/payment")
        .json(json!({ "gateway_id": 1, "user_id": user, "amount": amount, "currency": "USDT" }))
        .send()
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let data = &answer.body["gateway_data"];
    (
        answer.body["payment_id"].as_i64().unwrap(),
        data["address"].as_str().unwrap().to_owned(),
        data["token_contract"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_original_flows_payment_branch_end_to_end_on_the_devnet() {
    let system = paying_system().await;
    let customer = system.user("customer").await;
    let performer = system.user("performer").await;
    let deal = system.deal(customer, performer, "10").await;
    let confirmed = system.act(deal, "confirm", performer).await;
    assert_eq!(confirmed.body["status"], "waiting_for_payment", "{}", confirmed.text);

    let (payment, address, token) = create_payment(&system, customer, "10").await;
    let paid = system.pay_with_sdk(&token, &address, 10_000_000).await;
    assert_eq!(paid["result"], "SUCCESS");

    let done = system
        .payment_until(payment, Duration::from_secs(60), |p| p["status"] == "success")
        .await;
    assert_eq!(done["received"], "10.000000");
    assert_eq!(
        done["deposits"],
        json!([{
            "txid": paid["txid"],
            "log_index": 0,
            "amount": "10.000000",
            "block_number": paid["block_number"],
            "late": false,
        }])
    );
    assert_eq!(system.deal_status(deal).await, "confirmed");
    assert_eq!(system.balance(customer).await, ("0.000000".into(), "10.000000".into()));

    let closed = system.act(deal, "close", customer).await;
    assert_eq!(closed.body["status"], "close", "{}", closed.text);
    assert_eq!(system.balance(performer).await, ("10.000000".into(), "0.000000".into()));

    system.settle().await;
    let events = system.events().await;
    let count = |kind: &str| events.iter().filter(|(_, e)| e["type"] == kind).count();
    for kind in [
        "payment.created",
        "payment.received",
        "payment.succeeded",
        "deal.funded",
    ] {
        assert_eq!(count(kind), 1, "{kind} once");
    }
    let document = support::asyncapi();
    for (_, event) in &events {
        let violations = support::event_violations(&document, event);
        assert!(violations.is_empty(), "{event}: {violations:?}");
    }
    assert!(support::sequence_violations(&events).is_empty());
    system.assert_invariants().await;
}
