//! End-to-end tests of the whole system: the real `guarantor` binary, driven over HTTP and its
//! command line like a newcomer and a client would.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use support::System;

async fn get(system: &System, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = system.http.get(format!("{}{path}", system.base));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn up_serves_health_readiness_and_an_authenticated_api_then_stops_on_sigterm() {
    let system = System::up().await;

    let (health, _) = get(&system, "/healthz", None).await;
    let (ready, _) = get(&system, "/readyz", None).await;
    let (anonymous, error) = get(&system, "/api/v1/payment/gateways", None).await;
    let (authenticated, gateways) = get(&system, "/api/v1/payment/gateways", Some(&system.dev_key("platform"))).await;
    let (wrong_role, _) = get(&system, "/api/v1/payment/gateways", Some(&system.dev_key("arbiter"))).await;

    assert_eq!(health, StatusCode::OK);
    assert_eq!(ready, StatusCode::OK);
    assert_eq!(anonymous, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"]["code"], "unauthorized");
    assert_eq!(authenticated, StatusCode::OK);
    assert_eq!(gateways[0]["name"], "USDT TRC-20");
    assert_eq!(wrong_role, StatusCode::FORBIDDEN);
    assert!(system.terminate().await.success(), "a graceful shutdown exits 0");
}

#[tokio::test]
async fn an_api_key_created_on_the_command_line_works_until_it_is_revoked() {
    let system = System::up().await;

    let (created, stdout, stderr) = support::output(
        system
            .command()
            .args(["apikey", "create", "--tenant", "acme", "--role", "platform", "--json"]),
    )
    .await;
    assert!(created, "{stderr}");
    let created: Value = serde_json::from_str(stdout.trim()).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(created["tenant"], "acme");
    assert_eq!(created["role"], "platform");
    assert_eq!(
        get(&system, "/api/v1/payment/gateways", Some(&key)).await.0,
        StatusCode::OK
    );

    let (listed, list, _) =
        support::output(system.command().args(["apikey", "list", "--tenant", "acme", "--json"])).await;
    assert!(listed);
    assert!(list.contains(created["id"].as_str().unwrap()));
    assert!(!list.contains(&key), "list never shows keys");

    let (revoked, _, stderr) =
        support::output(
            system
                .command()
                .args(["apikey", "revoke", created["id"].as_str().unwrap()]),
        )
        .await;
    assert!(revoked, "{stderr}");
    // Lookups are cached for KEY_CACHE_TTL: the revoked key is refused within that time, not later.
    let revoked_at = std::time::Instant::now();
    let limit = guarantor_ingress::key_cache::KEY_CACHE_TTL + std::time::Duration::from_secs(1);
    loop {
        let status = get(&system, "/api/v1/payment/gateways", Some(&key)).await.0;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            revoked_at.elapsed() < limit,
            "a revoked key still works after {limit:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_bad_variable_stops_the_binary_with_the_variable_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = support::command("postgres://postgres@127.0.0.1:1/none", "nats://127.0.0.1:1", dir.path());
    command.env("GUARANTOR_SCAN_INTERVAL_SECS", "0").arg("migrate");

    let output = command.stderr(Stdio::piped()).output().await.unwrap();

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("GUARANTOR_SCAN_INTERVAL_SECS"));
}

#[tokio::test]
async fn up_says_how_to_start_postgres_when_it_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let port = guarantor_testkit::free_port();
    let mut command = support::command(
        &format!("postgres://postgres@127.0.0.1:{port}/none"),
        "nats://127.0.0.1:1",
        dir.path(),
    );
    command.arg("up");

    let (ok, _, stderr) = support::output(&mut command).await;

    assert!(!ok);
    assert!(stderr.contains("Postgres is not reachable"), "{stderr}");
    assert!(stderr.contains("GUARANTOR_DATABASE_URL"), "{stderr}");
}

#[test]
fn the_readme_shows_the_state_machine_table_the_ledger_decides_with() {
    let readme = include_str!("../README.md");
    assert!(
        readme.contains(&guarantor_domain::deal::markdown_table()),
        "README.md's deal table differs from guarantor_domain::deal::markdown_table(); paste the new one"
    );
}

#[tokio::test]
async fn guarantor_devnet_runs_alone_with_its_flags_and_produces_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let help =
        support::output(support::command("postgres://unused", "nats://unused", dir.path()).args(["devnet", "--help"]))
            .await;
    for flag in ["--addr", "--block-interval-ms", "--solidify-lag", "--state-file"] {
        assert!(help.1.contains(flag), "{flag} missing from --help:\n{}", help.1);
    }
    let port = guarantor_testkit::free_port();
    let state_file = dir.path().join("chain.json");
    let _devnet = support::command("postgres://unused", "nats://unused", dir.path())
        .args([
            "devnet",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--block-interval-ms",
            "100",
            "--solidify-lag",
            "2",
        ])
        .arg("--state-file")
        .arg(&state_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let mut head = 0;
    for _ in 0..100 {
        if let Ok(response) = http
            .post(format!("http://127.0.0.1:{port}/wallet/getnowblock"))
            .send()
            .await
        {
            let block: Value = response.json().await.unwrap();
            head = block["block_header"]["raw_data"]["number"].as_i64().unwrap_or(0);
            if head >= 3 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(head >= 3, "blocks are produced every 100 ms (head {head})");
    let info: Value = http
        .post(format!("http://127.0.0.1:{port}/wallet/getnodeinfo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(info["solidityBlock"].as_str().unwrap().starts_with("Num:"));
    assert!(state_file.exists(), "the chain is kept in its state file");
}

#[tokio::test]
async fn up_says_how_to_start_nats_when_it_is_unreachable() {
    let db = guarantor_testkit::TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let port = guarantor_testkit::free_port();
    let url = guarantor_config::ExposeSecret::expose_secret(&db.url()).to_owned();
    let mut command = support::command(&url, &format!("nats://127.0.0.1:{port}"), dir.path());
    command.arg("up");

    let (ok, _, stderr) = support::output(&mut command).await;

    assert!(!ok);
    assert!(stderr.contains("NATS is not reachable"), "{stderr}");
    assert!(stderr.contains("nats-server -js"), "{stderr}");
}

#[tokio::test]
async fn the_benchmark_refuses_to_set_the_workers_of_a_system_it_did_not_start() {
    let db = guarantor_testkit::TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let url = guarantor_config::ExposeSecret::expose_secret(&db.url()).to_owned();
    let (ran, _, stderr) = support::output(support::command(&url, "nats://127.0.0.1:1", dir.path()).args([
        "bench",
        "--url",
        "http://127.0.0.1:1",
        "--ledger-workers",
        "2",
    ]))
    .await;
    assert!(!ran);
    assert!(
        stderr.contains("--ledger-workers sets the benchmark's own ledger"),
        "{stderr}"
    );
}

#[tokio::test]
#[allow(clippy::float_arithmetic, reason = "a benchmark report's ratio, never money")]
async fn the_benchmark_runs_its_own_system_and_reports_the_full_path_beside_its_baselines() {
    let db = guarantor_testkit::TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let url = guarantor_config::ExposeSecret::expose_secret(&db.url()).to_owned();
    let (ran, stdout, stderr) = support::output(support::command(&url, "nats://127.0.0.1:1", dir.path()).args([
        "bench",
        "--seconds",
        "1",
        "--clients",
        "1,2",
        "--open-deals",
        "20",
        "--ledger-workers",
        "3",
        "--json",
    ]))
    .await;
    assert!(ran, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("{err}: {stdout}"));
    assert!(report["pgbench"]["tps"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["pgbench_after"]["tps"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["jetstream"]["sync_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    for phase in phases {
        assert!(phase["lifecycles"].as_u64().unwrap() > 0, "{phase}");
        assert_eq!(phase["errors"], serde_json::json!({}), "{phase}");
        assert!(phase["routes"]["create"]["p99_ms"].as_f64().unwrap() > 0.0, "{phase}");
        // Every command costs the machine some CPU (the services, Postgres, nats-server).
        assert!(phase["machine_cpu_us_per_command"].as_f64().unwrap() > 0.0, "{phase}");
    }
    let mean = (report["pgbench"]["tps"].as_f64().unwrap() + report["pgbench_after"]["tps"].as_f64().unwrap()) / 2.0;
    let (clients, ratio) = (
        &report["ratios_to_pgbench"][0][0],
        report["ratios_to_pgbench"][0][1].as_f64().unwrap(),
    );
    assert_eq!(clients, 1);
    let expected = phases[0]["commands_per_sec"].as_f64().unwrap() / mean;
    assert!((ratio - expected).abs() < 1e-9, "{ratio} against {expected}");
    assert_eq!(report["open_deals"], 20);
    assert_eq!(report["ledger_workers"], 3);
    let rss = report["rss_mb"].as_array().unwrap();
    assert_eq!(rss.len(), 4, "one reading per service: {rss:?}");
    // The scratch databases are gone afterwards.
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
        .bind(format!("{}\\_%", db.name()))
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn the_ledger_reports_its_batches_and_verdicts_as_prometheus_metrics() {
    let system = System::up().await;
    system.user("alice").await;
    let refused = system
        .post("/api/v1/deal/")
        .json(serde_json::json!({ "title": "t", "amount": "1", "customer_id": 999, "performer_id": 998 }))
        .send()
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);

    let text = system.metrics().await;
    for line in [
        r#"guarantor_commands_applied_total{kind="user.upsert",outcome="applied"} 1"#,
        r#"guarantor_commands_applied_total{kind="deal.create",outcome="refused"} 1"#,
        r#"guarantor_ledger_batch_size_bucket{le="1"}"#,
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }

    // A message that is no command is dead-lettered; the backlog gauges show it, and nothing waiting.
    let js = system.jetstream().await;
    guarantor_messaging::publish(
        &js,
        "guarantor.cmd.garbage".to_owned(),
        "garbage-1",
        None,
        bytes::Bytes::from_static(b"not json"),
    )
    .await
    .unwrap();
    let expected = [
        "guarantor_dlq_messages 1\n",
        "guarantor_consumer_pending{consumer=\"ledger\"} 0\n",
        "guarantor_consumer_ack_pending{consumer=\"ledger\"} 0\n",
        "guarantor_outbox_backlog 0\n",
    ];
    system.metrics_until(&expected, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_service_run_alone_serves_health_readiness_and_metrics_on_its_ops_address() {
    let mut system = System::up().await;
    let start = |part: &str, node: &str| {
        let port = guarantor_testkit::free_port();
        let child = system
            .command()
            .env("GUARANTOR_OPS_ADDR", format!("127.0.0.1:{port}"))
            .env("GUARANTOR_TRON_NODE_URL", node)
            .arg(part)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        (child, format!("http://127.0.0.1:{port}"))
    };
    let (_ledger, ledger) = start("ledger", &system.devnet);
    // A scanner whose node does not answer.
    let (_scanner, scanner) = start(
        "scanner",
        &format!("http://127.0.0.1:{}", guarantor_testkit::free_port()),
    );
    let http = reqwest::Client::new();
    let get = async |url: String| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(&url).send().await {
                let status = response.status();
                return (status, response.text().await.unwrap());
            }
            assert!(Instant::now() < deadline, "{url} never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    assert_eq!(get(format!("{ledger}/healthz")).await.0, StatusCode::OK);
    let (status, body) = get(format!("{ledger}/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get(format!("{ledger}/metrics")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get(format!("{scanner}/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("tron_node"), "{body}");

    system.stop_nats();
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let (status, body) = get(format!("{ledger}/readyz")).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert!(Instant::now() < deadline, "still ready without NATS: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        body.contains("nats") && body.contains("\"code\":\"unavailable\""),
        "{body}"
    );
}

#[tokio::test]
async fn the_fault_run_kills_every_process_kind_and_finds_nothing_lost_or_doubled() {
    // `guarantor chaos` starts a system of its own (its own Postgres cluster and nats-server).
    let dir = tempfile::tempdir().unwrap();
    let (ok, report, stderr) = support::output(
        tokio::process::Command::new(support::BINARY)
            .args(["chaos", "--seconds", "2", "--clients", "3"])
            .current_dir(dir.path()),
    )
    .await;
    assert!(ok, "{report}\n{stderr}");
    assert!(
        report.contains(
            "killed (SIGKILL) and restarted in turn: ingress, ledger-1, scanner, sweeper, nats-server, postgres"
        ),
        "{report}"
    );
    for line in [
        "lost                   0\n",
        "doubled                0\n",
        "reconcile violations   0\n",
    ] {
        assert!(report.contains(line), "{line:?} in:\n{report}");
    }
    let acknowledged: u64 = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("acknowledged"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap();
    assert!(acknowledged > 100, "the load ran through the faults: {report}");
}
