//! The system on a 3-node JetStream cluster (three local nats-server processes clustered with
//! `nats/cluster.conf`, streams with 3 replicas): a member killed with SIGKILL under load — the
//! command stream's leader, then, after it rejoined, a follower — loses no accepted command and
//! applies none twice, the stream's leadership moves, and the services carry on without a restart.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guarantor_testkit::TestNats;
use reqwest::StatusCode;
use serde_json::json;
use support::System;

const CLIENTS: usize = 6;
const PER_CLIENT: usize = 200;

/// The name of the server leading the command stream, once there is one.
async fn command_stream_leader(js: &guarantor_messaging::JetStream) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = js.get_stream(guarantor_messaging::COMMAND_STREAM).await {
            if let Ok(info) = stream.info().await {
                if let Some(leader) = info.cluster.as_ref().and_then(|cluster| cluster.leader.clone()) {
                    return leader;
                }
            }
        }
        assert!(Instant::now() < deadline, "the command stream has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The test's node index of a server name (`n1` → 0).
fn node_index(name: &str) -> usize {
    name.trim_start_matches('n').parse::<usize>().unwrap() - 1
}

/// Sends one credit until the ingress accepts it (200, or 202 with a command id to follow), retrying
/// the same `Idempotency-Key` after a 503 (the queue was unavailable while leadership moved).
async fn credit(system: &System, user: i64, key: &str, retries: &AtomicUsize) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = system
            .post("/api/v1/admin/adjustments")
            .key(&system.dev_key("admin"))
            .idempotency(key)
            .json(json!({ "user_id": user, "currency": "USDT", "amount": "1", "reason": "cluster load" }))
            .send()
            .await;
        match answer.status {
            StatusCode::OK => return None,
            StatusCode::ACCEPTED => return Some(answer.body["command_id"].as_str().unwrap().to_owned()),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(answer.error_code(), "unavailable", "{}", answer.text);
                retries.fetch_add(1, Ordering::Relaxed);
            }
            other => panic!("credit {key}: {other} {}", answer.text),
        }
        assert!(Instant::now() < deadline, "credit {key} was never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn applied(system: &System) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM commands WHERE kind = 'balance.adjust'")
        .fetch_one(&system.db.pool)
        .await
        .unwrap()
}

async fn until_applied(system: &System, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied(system).await < at_least {
        assert!(
            Instant::now() < deadline,
            "the load stalled below {at_least} applied credits"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_cluster_member_under_load_loses_no_command_and_applies_none_twice() {
    let nats = TestNats::cluster().await;
    let mut system = System::start_on(
        nats,
        &["up", "--without", "scanner,sweeper"],
        // An ack sent to a member as it dies is lost: the message comes back after the ack wait and
        // is answered from the inbox. A short wait lets the test see that within its settle time.
        &[
            ("GUARANTOR_STREAM_REPLICAS", "3"),
            ("GUARANTOR_COMMAND_TIMEOUT_MS", "2000"),
            ("GUARANTOR_LEDGER_ACK_WAIT_SECS", "3"),
        ],
    )
    .await;
    let js = system.jetstream().await;
    for name in [
        guarantor_messaging::COMMAND_STREAM,
        guarantor_messaging::EVENT_STREAM,
        guarantor_messaging::DLQ_STREAM,
    ] {
        let info = js.get_stream(name).await.unwrap().info().await.unwrap().clone();
        assert_eq!(info.config.num_replicas, 3, "{name}");
        let cluster = info.cluster.expect("a clustered stream");
        assert_eq!(cluster.replicas.len(), 2, "{name}: a leader and two followers");
    }

    let mut users = Vec::new();
    for client in 0..CLIENTS {
        users.push(system.user(&format!("cluster-{client}")).await);
    }
    let total = (CLIENTS * PER_CLIENT) as i64;
    let retries = AtomicUsize::new(0);
    let load = futures::future::join_all(users.iter().enumerate().map(|(client, &user)| {
        let (system, retries) = (&system, &retries);
        async move {
            let mut pending = Vec::new();
            for n in 0..PER_CLIENT {
                if let Some(id) = credit(system, user, &format!("credit-{client}-{n}"), retries).await {
                    pending.push(id);
                }
            }
            pending
        }
    }));
    let chaos = async {
        // The leader of the command stream dies a quarter of the way in.
        until_applied(&system, total / 4).await;
        let first = command_stream_leader(&system.jetstream().await).await;
        let killed = node_index(&first);
        system.nats.kill_node(killed);
        let applied_at_first_kill = applied(&system).await;
        // The load goes on on two members; then the dead one rejoins, and the member that has not
        // died yet, a follower of the new leader, dies.
        until_applied(&system, applied_at_first_kill + total / 8).await;
        system.nats.restart_node(killed).await;
        until_applied(&system, total / 2).await;
        let second = command_stream_leader(&system.jetstream().await).await;
        let follower = (0..3)
            .find(|&index| index != node_index(&second) && index != killed)
            .unwrap();
        system.nats.kill_node(follower);
        let applied_at_second_kill = applied(&system).await;
        (first, second, applied_at_first_kill, applied_at_second_kill)
    };
    let (pending, (first, second, at_first, at_second)) = tokio::join!(load, chaos);
    assert!(
        at_first < total && at_second < total,
        "both kills landed mid-load: at {at_first} and {at_second} of {total} applied"
    );
    assert_ne!(
        first, second,
        "the command stream's leadership moved off the killed member"
    );

    // Every 202 resolves, and the ledger and ingress never restarted: `up` is the same process.
    for id in pending.into_iter().flatten() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = system.get(&format!("/api/v1/commands/{id}")).send().await;
            if answer.body["status"] == "done" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "command {id} never resolved: {}",
                answer.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(system.child.try_wait().unwrap().is_none(), "guarantor up kept running");
    system.settle().await;
    for &user in &users {
        assert_eq!(
            system.balance(user).await.0,
            format!("{PER_CLIENT}.000000"),
            "each accepted credit of user {user} applied exactly once"
        );
    }
    assert_eq!(applied(&system).await, total);
    system.assert_invariants().await;
    eprintln!(
        "cluster: {total} credits, leader {first} killed at {at_first} applied, then follower killed at \
         {at_second}; new leader {second}; {} retries after 503",
        retries.load(Ordering::Relaxed)
    );
}
