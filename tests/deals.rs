//! End-to-end tests of deals and the ledger: the real `guarantor up`, driven over HTTP like the
//! platform's backend, its arbiter and its operator would; the ledger's invariants are checked from
//! the database after every scenario.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::System;

#[tokio::test]
async fn confirm_with_enough_balance_holds_the_money_and_close_pays_the_performer() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    assert_eq!(system.adjust(customer, "100").await.status, StatusCode::OK);
    let deal = system.deal(customer, performer, "40.5").await;
    assert_eq!(system.deal_status(deal).await, "created");

    let confirmed = system.act(deal, "confirm", performer).await;

    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
    assert_eq!(confirmed.body["status"], "confirm_performer");
    assert_eq!(confirmed.body["amount"], "40.500000");
    assert_eq!(system.balance(customer).await, ("59.500000".into(), "40.500000".into()));

    let closed = system.act(deal, "close", customer).await;

    assert_eq!(closed.status, StatusCode::OK, "{}", closed.text);
    assert_eq!(closed.body["status"], "close");
    assert_eq!(system.balance(customer).await, ("59.500000".into(), "0.000000".into()));
    assert_eq!(system.balance(performer).await, ("40.500000".into(), "0.000000".into()));
    system.assert_invariants().await;
}

#[tokio::test]
async fn confirm_without_balance_waits_and_a_later_credit_funds_the_deal() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    let older = system.deal(customer, performer, "30").await;
    let newer = system.deal(customer, performer, "30").await;

    let waiting = system.act(older, "confirm", performer).await;
    system.act(newer, "confirm", performer).await;

    assert_eq!(waiting.body["status"], "waiting_for_payment");
    assert_eq!(system.balance(customer).await, ("0.000000".into(), "0.000000".into()));

    let credit = system.adjust(customer, "45").await;

    assert_eq!(credit.status, StatusCode::OK, "{}", credit.text);
    assert_eq!(credit.body["amount"], "45.000000");
    assert_eq!(
        system.deal_status(older).await,
        "confirmed",
        "the oldest waiting deal is funded first"
    );
    assert_eq!(
        system.deal_status(newer).await,
        "waiting_for_payment",
        "15 left does not cover 30"
    );
    assert_eq!(system.balance(customer).await, ("15.000000".into(), "30.000000".into()));

    system.adjust(customer, "15").await;

    assert_eq!(system.deal_status(newer).await, "confirmed");
    assert_eq!(system.balance(customer).await, ("0.000000".into(), "60.000000".into()));
    system.assert_invariants().await;
}

#[tokio::test]
async fn a_dispute_closed_for_the_customer_refunds_and_one_closed_for_the_performer_releases() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    system.adjust(customer, "20").await;
    let refunded = system.deal(customer, performer, "10").await;
    let released = system.deal(customer, performer, "10").await;
    system.act(refunded, "confirm", performer).await;
    system.act(released, "confirm", performer).await;

    let disputed = system.open_dispute(refunded, customer).await;
    system.open_dispute(released, performer).await;

    assert_eq!(disputed.status, StatusCode::OK, "{}", disputed.text);
    assert_eq!(disputed.body["status"], "dispute");
    assert_eq!(disputed.body["dispute"]["title"], "not delivered");
    assert_eq!(disputed.body["dispute"]["opened_by"], customer);

    let for_customer = system.arbitrate(refunded, "close_customer").await;
    let for_performer = system.arbitrate(released, "close_preformer").await;

    assert_eq!(
        for_customer.body["status"], "arb_close_customer",
        "{}",
        for_customer.text
    );
    assert_eq!(for_customer.body["dispute"]["resolution"], "customer");
    assert_eq!(
        for_performer.body["status"], "arb_close_performer",
        "{}",
        for_performer.text
    );
    assert_eq!(system.balance(customer).await, ("10.000000".into(), "0.000000".into()));
    assert_eq!(system.balance(performer).await, ("10.000000".into(), "0.000000".into()));
    system.assert_invariants().await;
}

#[tokio::test]
async fn deny_answers_an_empty_body_and_is_final() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    let deal = system.deal(customer, performer, "5").await;

    let denied = system.act(deal, "deny", performer).await;
    let confirm_after = system.act(deal, "confirm", performer).await;

    assert_eq!(denied.status, StatusCode::OK);
    assert_eq!(denied.text, "", "deny answers an empty body");
    assert_eq!(system.deal_status(deal).await, "deny_performer");
    assert_eq!(confirm_after.status, StatusCode::CONFLICT);
    assert_eq!(confirm_after.error_code(), "invalid_transition");
    assert_eq!(confirm_after.body["error"]["details"]["status"], "deny_performer");
    system.assert_invariants().await;
}

#[tokio::test]
async fn the_customer_can_cancel_before_funding_but_not_after() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    system.adjust(customer, "5").await;
    let unfunded = system.deal(customer, performer, "5").await;
    let funded = system.deal(customer, performer, "5").await;
    system.act(funded, "confirm", performer).await;

    let cancelled = system
        .post(&format!("/api/v1/deal/{unfunded}/cancel"))
        .acting(customer)
        .send()
        .await;
    let refused = system.act(funded, "cancel", customer).await;

    assert_eq!(cancelled.body["status"], "cancelled", "{}", cancelled.text);
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.error_code(), "invalid_transition");
    assert_eq!(system.balance(customer).await, ("0.000000".into(), "5.000000".into()));
    system.assert_invariants().await;
}

#[tokio::test]
async fn only_the_right_party_or_role_may_act() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    let stranger = system.user("carol").await;
    let deal = system.deal(customer, performer, "5").await;
    let before = system.snapshot().await;

    let customer_confirms = system.act(deal, "confirm", customer).await;
    let stranger_denies = system.act(deal, "deny", stranger).await;
    let no_acting_user = system.get(&format!("/api/v1/deal/{deal}/confirm")).send().await;
    let platform_arbitrates = system
        .post(&format!("/api/v1/deal/{deal}/dispute/close_customer"))
        .send()
        .await;
    let arbiter_creates_user = system
        .post("/api/v1/user")
        .key(&system.dev_key("arbiter"))
        .json(json!({ "external_id": "x", "name": "x" }))
        .send()
        .await;

    assert_eq!(
        (customer_confirms.status, customer_confirms.error_code()),
        (StatusCode::FORBIDDEN, "wrong_party")
    );
    assert_eq!(
        (stranger_denies.status, stranger_denies.error_code()),
        (StatusCode::FORBIDDEN, "not_a_party")
    );
    assert_eq!(
        (no_acting_user.status, no_acting_user.error_code()),
        (StatusCode::BAD_REQUEST, "missing_acting_user")
    );
    assert_eq!(platform_arbitrates.status, StatusCode::FORBIDDEN);
    assert_eq!(arbiter_creates_user.status, StatusCode::FORBIDDEN);
    assert_eq!(
        system.snapshot().await["deals"],
        before["deals"],
        "refusals change nothing"
    );
}

#[tokio::test]
async fn another_tenants_objects_answer_404() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    let deal = system.deal(customer, performer, "5").await;
    let other = guarantor_ingress::api_keys::create(&system.db.pool, "other", guarantor_domain::Role::Platform)
        .await
        .unwrap();
    let other_key = guarantor_config::ExposeSecret::expose_secret(&other.key).to_owned();

    let user = system
        .get(&format!("/api/v1/user/{customer}"))
        .key(&other_key)
        .send()
        .await;
    let balance = system
        .get(&format!("/api/v1/user/{customer}/balance"))
        .key(&other_key)
        .send()
        .await;
    let read = system.get(&format!("/api/v1/deal/{deal}")).key(&other_key).send().await;
    let act = system
        .get(&format!("/api/v1/deal/{deal}/confirm"))
        .key(&other_key)
        .acting(performer)
        .send()
        .await;
    let create = system
        .post("/api/v1/deal")
        .key(&other_key)
        .json(json!({ "title": "t", "amount": "1", "customer_id": customer, "performer_id": performer }))
        .send()
        .await;
    let listed = system.get("/api/v1/deal/").key(&other_key).send().await;

    for answer in [&user, &balance, &read, &act, &create] {
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);
        answer.error_code();
    }
    assert_eq!(listed.body["items"], json!([]));
    assert_eq!(system.deal_status(deal).await, "created");
}

#[tokio::test]
async fn bad_input_answers_a_documented_4xx_and_changes_nothing() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    let before = system.snapshot().await;
    let deal = |amount: serde_json::Value| json!({ "title": "t", "amount": amount, "customer_id": customer, "performer_id": performer });
    let cases: Vec<(serde_json::Value, StatusCode, &str)> = vec![
        (deal(json!("0")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount"),
        (deal(json!("-1")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount"),
        (
            deal(json!("1.0000001")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            deal(json!(1.0000001)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            deal(json!("1000000000.000001")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            deal(json!("ten")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (deal(json!(true)), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        (
            json!({ "title": "t", "amount": "1", "currency": "BTC", "customer_id": customer, "performer_id": performer }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_currency",
        ),
        (
            json!({ "title": "", "amount": "1", "customer_id": customer, "performer_id": performer }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "title": "x".repeat(129), "amount": "1", "customer_id": customer, "performer_id": performer }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "title": "t", "amount": "1", "customer_id": customer, "performer_id": customer }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "same_customer_and_performer",
        ),
        (
            json!({ "title": "t", "amount": "1", "customer_id": customer, "performer_id": 999_999 }),
            StatusCode::NOT_FOUND,
            "user_not_found",
        ),
        (
            json!({ "title": "t", "amount": "1", "customer_id": "one", "performer_id": performer }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (json!([1, 2]), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
    ];
    for (body, status, code) in cases {
        let answer = system.post("/api/v1/deal").json(body.clone()).send().await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (status, code),
            "{body}: {}",
            answer.text
        );
    }
    let malformed = system
        .http
        .post(format!("{}/api/v1/deal", system.base))
        .bearer_auth(system.dev_key("platform"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let not_json = system
        .http
        .post(format!("{}/api/v1/deal", system.base))
        .bearer_auth(system.dev_key("platform"))
        .body("title=t")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for path in [
        "/api/v1/deal/abc",
        "/api/v1/deal/-1",
        "/api/v1/deal/0/confirm",
        "/api/v1/user/1.5/balance",
    ] {
        let answer = system.get(path).acting(performer).send().await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (StatusCode::BAD_REQUEST, "invalid_id"),
            "{path}"
        );
    }
    let unknown = system.get("/api/v1/deal/424242").send().await;
    assert_eq!(
        (unknown.status, unknown.error_code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let bad_acting_user = system.get("/api/v1/deal/1/confirm").acting(0).send().await;
    assert_eq!(bad_acting_user.status, StatusCode::BAD_REQUEST);
    let long_external_id = system
        .post("/api/v1/user")
        .json(json!({ "external_id": "x".repeat(129), "name": "n" }))
        .send()
        .await;
    assert_eq!(long_external_id.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Postgres text cannot hold NUL: every text field refuses it up front (the fuzz run found a user
    // name "\0" reaching the ledger and failing there as a 500).
    let nul = "a\u{0}b";
    for (path, body) in [
        ("/api/v1/user", json!({ "external_id": "n", "name": nul })),
        ("/api/v1/user", json!({ "external_id": nul, "name": "n" })),
        (
            "/api/v1/deal",
            json!({ "title": nul, "amount": "1", "customer_id": customer, "performer_id": performer }),
        ),
        (
            "/api/v1/deal",
            json!({ "title": "t", "description": nul, "amount": "1", "customer_id": customer, "performer_id": performer }),
        ),
    ] {
        let answer = system.post(path).json(body.clone()).send().await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            "{body}: {}",
            answer.text
        );
    }
    let nul_reason = system
        .post("/api/v1/admin/adjustments")
        .key(&system.dev_key("admin"))
        .json(json!({ "user_id": customer, "currency": "USDT", "amount": "5", "reason": nul }))
        .send()
        .await;
    assert_eq!(
        nul_reason.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        nul_reason.text
    );
    let overdraft = system.adjust(customer, "-1").await;
    assert_eq!(
        (overdraft.status, overdraft.error_code()),
        (StatusCode::CONFLICT, "insufficient_funds")
    );
    let zero = system.adjust(customer, "0").await;
    assert_eq!(zero.status, StatusCode::UNPROCESSABLE_ENTITY);
    let platform_adjusts = system
        .post("/api/v1/admin/adjustments")
        .json(json!({ "user_id": customer, "currency": "USDT", "amount": "5", "reason": "free money" }))
        .send()
        .await;
    assert_eq!(platform_adjusts.status, StatusCode::FORBIDDEN);

    let after = system.snapshot().await;
    assert_eq!(after["deals"], before["deals"]);
    assert_eq!(after["accounts"], before["accounts"]);
    assert_eq!(after["transfers"], before["transfers"]);
    system.assert_invariants().await;
}

#[tokio::test]
async fn users_are_upserted_by_external_id_and_accept_integer_ids() {
    let system = System::up().await;

    let first = system
        .post("/api/v1/user")
        .json(json!({ "external_id": 42, "name": "Ann" }))
        .send()
        .await;
    let again = system
        .post("/api/v1/user/")
        .json(json!({ "external_id": "42", "name": "Ann B." }))
        .send()
        .await;
    let read = system.get(&format!("/api/v1/user/{}", first.body["id"])).send().await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.body["external_id"], "42");
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(read.body["name"], "Ann B.");
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_result_and_refuses_another_body() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    let body = json!({ "title": "once", "amount": "3", "customer_id": customer, "performer_id": performer });

    let first = system
        .post("/api/v1/deal")
        .idempotency("create-once")
        .json(body.clone())
        .send()
        .await;
    let retry = system
        .post("/api/v1/deal")
        .idempotency("create-once")
        .json(body.clone())
        .send()
        .await;
    let other_body = system
        .post("/api/v1/deal")
        .idempotency("create-once")
        .json(json!({ "title": "twice", "amount": "3", "customer_id": customer, "performer_id": performer }))
        .send()
        .await;
    let other_route = system
        .post("/api/v1/user")
        .idempotency("create-once")
        .json(json!({ "external_id": "z" }))
        .send()
        .await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!((retry.status, &retry.body), (first.status, &first.body));
    assert_eq!(
        (other_body.status, other_body.error_code()),
        (StatusCode::CONFLICT, "idempotency_key_reused")
    );
    assert_eq!(other_route.status, StatusCode::CONFLICT);
    let listed = system.get("/api/v1/deal").send().await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn deals_are_listed_newest_first_a_page_at_a_time() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(system.deal(customer, performer, "1").await);
    }
    system.act(created[0], "deny", performer).await;

    let first = system.get("/api/v1/deal?limit=2").send().await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = system
        .get(&format!("/api/v1/deal?limit=2&cursor={cursor}"))
        .send()
        .await;
    let denied = system.get("/api/v1/deal?status=deny_performer").send().await;
    let bad_limit = system.get("/api/v1/deal?limit=0").send().await;

    let ids = |answer: &support::Answer| -> Vec<i64> {
        answer.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["deal_id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&first), vec![created[4], created[3]]);
    assert_eq!(ids(&second), vec![created[2], created[1]]);
    assert_eq!(ids(&denied), vec![created[0]]);
    assert_eq!(bad_limit.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_request_id_travels_from_http_into_the_command_message() {
    let system = System::up().await;

    let answer = system
        .http
        .post(format!("{}/api/v1/user", system.base))
        .bearer_auth(system.dev_key("platform"))
        .header("x-request-id", "trace-me-42")
        .json(&json!({ "external_id": "traced" }))
        .send()
        .await
        .unwrap();

    assert_eq!(answer.headers()["x-request-id"], "trace-me-42");
    let js = system.jetstream().await;
    let mut stream = js.get_stream(guarantor_messaging::COMMAND_STREAM).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let stored = stream.get_raw_message(last).await.unwrap();
    assert_eq!(
        stored.headers.get("x-request-id").map(|v| v.as_str()),
        Some("trace-me-42")
    );
}
