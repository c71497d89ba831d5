//! The ingress skeleton against real Postgres and a real nats-server of each test's own:
//! health, readiness, authentication, roles, the error shape and the OpenAPI document.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use guarantor_config::{Config, ExposeSecret};
use guarantor_domain::Role;
use guarantor_ingress::{api_keys, AppState, Application};
use guarantor_testkit::{TestDb, TestNats};
use reqwest::StatusCode;
use serde_json::Value;

struct TestApp {
    base: String,
    http: reqwest::Client,
    db: TestDb,
    nats: Option<TestNats>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestApp {
    async fn spawn() -> Self {
        let (db, nats) = tokio::join!(TestDb::new(), TestNats::start());
        let client = guarantor_messaging::connect(&nats.url(), "ingress-test").await.unwrap();
        let config = Arc::new(Config::from_vars(&HashMap::new()).unwrap());
        let state = AppState::new(db.pool.clone(), client, config).await.unwrap();
        let app = Application::build(state, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = app.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            db,
            nats: Some(nats),
            _stop: stop,
        }
    }

    async fn key(&self, tenant: &str, role: Role) -> String {
        let created = api_keys::create(&self.db.pool, tenant, role).await.unwrap();
        created.key.expose_secret().to_owned()
    }

    async fn get(&self, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }
}

fn assert_error_shape(body: &Value, code: &str) {
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["details"].is_object(), "{body}");
}

#[tokio::test]
async fn health_and_readiness_answer_200_when_postgres_and_nats_are_up() {
    let app = TestApp::spawn().await;

    let (health, _) = app.get("/healthz", None).await;
    let (ready, body) = app.get("/readyz", None).await;

    assert_eq!(health, StatusCode::OK);
    assert_eq!(ready, StatusCode::OK);
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn readiness_answers_503_in_the_error_shape_when_nats_is_down() {
    let mut app = TestApp::spawn().await;

    drop(app.nats.take());

    let mut last = (StatusCode::OK, Value::Null);
    for _ in 0..100 {
        last = app.get("/readyz", None).await;
        if last.0 == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_error_shape(&last.1, "unavailable");
    assert_eq!(last.1["error"]["details"]["down"], serde_json::json!(["nats"]));
}

#[tokio::test]
async fn an_api_call_without_a_valid_key_answers_401_in_the_documented_shape() {
    let app = TestApp::spawn().await;
    let well_formed_but_unknown = format!("gk_{}_{}", uuid_hex(), "A".repeat(43));

    for key in [None, Some("nonsense"), Some(well_formed_but_unknown.as_str())] {
        let (status, body) = app.get("/api/v1/payment/gateways", key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_error_shape(&body, "unauthorized");
    }
}

#[tokio::test]
async fn a_valid_key_passes_and_a_wrong_role_answers_403() {
    let app = TestApp::spawn().await;
    let platform = app.key("acme", Role::Platform).await;
    let arbiter = app.key("acme", Role::Arbiter).await;

    let (ok, gateways) = app.get("/api/v1/payment/gateways", Some(&platform)).await;
    let (forbidden, body) = app.get("/api/v1/payment/gateways", Some(&arbiter)).await;

    assert_eq!(ok, StatusCode::OK);
    assert_eq!(gateways[0]["id"], 1);
    assert_eq!(gateways[0]["currency"], serde_json::json!(["USDT"]));
    assert_eq!(forbidden, StatusCode::FORBIDDEN);
    assert_error_shape(&body, "forbidden");
}

#[tokio::test]
async fn a_key_with_a_tampered_secret_is_refused() {
    let app = TestApp::spawn().await;
    let key = app.key("acme", Role::Platform).await;
    let mut tampered = key.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    let (status, _) = app.get("/api/v1/payment/gateways", Some(&tampered)).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_revoked_key_is_refused() {
    // (A key revoked while its lookup is cached is refused within KEY_CACHE_TTL: tests/system.rs.)
    let app = TestApp::spawn().await;
    let created = api_keys::create(&app.db.pool, "acme", Role::Platform).await.unwrap();
    let key = created.key.expose_secret().to_owned();

    assert!(api_keys::revoke(&app.db.pool, created.id).await.unwrap());

    assert_eq!(
        app.get("/api/v1/payment/gateways", Some(&key)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        !api_keys::revoke(&app.db.pool, created.id).await.unwrap(),
        "revoking twice is a no-op"
    );
}

#[tokio::test]
async fn api_keys_are_not_stored_in_clear_text() {
    let app = TestApp::spawn().await;
    let key = app.key("acme", Role::Platform).await;
    let secret = key.rsplit('_').next().unwrap().to_owned();

    let dump: Vec<String> = sqlx::query_scalar("SELECT row_to_json(k)::text FROM api_keys k")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let hex_dump: Vec<String> = sqlx::query_scalar("SELECT encode(secret_sha256, 'escape') FROM api_keys")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();

    assert_eq!(dump.len(), 1);
    for row in dump.iter().chain(&hex_dump) {
        assert!(!row.contains(&secret), "the key's secret is stored: {row}");
        assert!(!row.contains(&key), "the key is stored: {row}");
    }
}

#[tokio::test]
async fn listing_keys_never_shows_them() {
    let app = TestApp::spawn().await;
    let key = app.key("acme", Role::Platform).await;
    app.key("other", Role::Arbiter).await;

    let all = api_keys::list(&app.db.pool, None).await.unwrap();
    let acme = api_keys::list(&app.db.pool, Some("acme")).await.unwrap();

    assert_eq!(all.len(), 2);
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0].role, Role::Platform);
    let printed = serde_json::to_string(&all).unwrap();
    assert!(!printed.contains(key.rsplit('_').next().unwrap()));
}

#[tokio::test]
async fn every_route_answers_with_and_without_a_trailing_slash() {
    let app = TestApp::spawn().await;
    let key = app.key("acme", Role::Platform).await;

    let (plain, _) = app.get("/api/v1/payment/gateways", Some(&key)).await;
    let (slashed, _) = app.get("/api/v1/payment/gateways/", Some(&key)).await;
    let (health, _) = app.get("/healthz/", None).await;

    assert_eq!(
        (plain, slashed, health),
        (StatusCode::OK, StatusCode::OK, StatusCode::OK)
    );
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_the_router_serves() {
    let app = TestApp::spawn().await;
    let key = app.key("acme", Role::Admin).await;
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    // Every documented operation is routed: nothing answers "no such route" or "method not allowed".
    for (method, path) in &documented {
        let concrete = path.replace(['{', '}'], "").replace("_id", "");
        let response = app
            .http
            .request(method.parse().unwrap(), format!("{}{concrete}", app.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(
            body["error"]["code"], "route_not_found",
            "{method} {path} is documented but not routed"
        );
    }
    // The router is built from the same declarations, so an undocumented route does not exist.
    let (status, body) = app.get("/api/v1/not-a-route", Some(&key)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error_shape(&body, "route_not_found");
    for expected in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/api/v1/user",
        "/api/v1/user/{user_id}",
        "/api/v1/user/{user_id}/balance",
        "/api/v1/deal",
        "/api/v1/deal/{deal_id}",
        "/api/v1/deal/{deal_id}/deny",
        "/api/v1/deal/{deal_id}/confirm",
        "/api/v1/deal/{deal_id}/cancel",
        "/api/v1/deal/{deal_id}/close",
        "/api/v1/deal/{deal_id}/dispute",
        "/api/v1/deal/{deal_id}/dispute/close_preformer",
        "/api/v1/deal/{deal_id}/dispute/close_performer",
        "/api/v1/deal/{deal_id}/dispute/close_customer",
        "/api/v1/commands/{command_id}",
        "/api/v1/admin/adjustments",
        "/api/v1/payment/gateways",
    ] {
        assert!(paths.contains_key(expected), "{expected} missing from the document");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn every_documented_operation_has_its_schemas_and_the_error_shape() {
    let app = TestApp::spawn().await;
    let (_, doc) = app.get("/openapi.json", None).await;

    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let success = responses.keys().find(|status| status.starts_with('2'));
            assert!(success.is_some(), "{method} {path} documents no success");
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                }
            }
            if path.starts_with("/api/v1") {
                assert!(operation["security"].is_array(), "{method} {path} documents no auth");
                assert!(responses.contains_key("401"), "{method} {path} documents no 401");
            }
        }
    }
    for (path, schema) in [
        ("/api/v1/user", "UpsertUser"),
        ("/api/v1/deal", "CreateDeal"),
        ("/api/v1/deal/{deal_id}/dispute", "OpenDispute"),
        ("/api/v1/admin/adjustments", "Adjustment"),
    ] {
        let body = &doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(body, &format!("#/components/schemas/{schema}"), "{path}");
    }
    let confirm = &doc["paths"]["/api/v1/deal/{deal_id}/confirm"];
    assert!(
        confirm["get"].is_object() && confirm["post"].is_object(),
        "actions answer GET and POST"
    );
    let described = confirm["post"]["description"].as_str().unwrap_or_default();
    assert!(
        described.contains("`created`") && described.contains("performer"),
        "{described}"
    );
    let deals_tag = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "deals")
        .unwrap();
    assert_eq!(
        deals_tag["description"].as_str().unwrap(),
        format!(
            "Deals and their state machine:\n\n{}",
            guarantor_domain::deal::markdown_table()
        )
    );
}

#[tokio::test]
async fn a_request_id_is_minted_or_propagated_and_echoed_back() {
    let app = TestApp::spawn().await;

    let minted = app.http.get(format!("{}/healthz", app.base)).send().await.unwrap();
    let propagated = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "client-chosen-id")
        .send()
        .await
        .unwrap();

    assert!(minted.headers().get("x-request-id").is_some());
    assert_eq!(propagated.headers()["x-request-id"], "client-chosen-id");
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let app = TestApp::spawn().await;
    app.get("/healthz", None).await;

    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(text.contains("guarantor_http_requests_total{"), "{text}");
    assert!(
        text.contains("guarantor_http_request_duration_seconds_bucket{"),
        "durations are a Prometheus histogram: {text}"
    );
    assert!(text.contains("route=\"/healthz\""), "{text}");
}

#[tokio::test]
async fn unknown_methods_answer_405_in_the_error_shape() {
    let app = TestApp::spawn().await;

    let response = app.http.delete(format!("{}/healthz", app.base)).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_error_shape(&response.json().await.unwrap(), "method_not_allowed");
}

fn uuid_hex() -> String {
    format!("{:032x}", 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128)
}
