//! The messaging helpers against a real nats-server of this test's own.

use bytes::Bytes;
use futures::StreamExt;
use guarantor_messaging::{apply_streams, connect, jetstream, publish, COMMAND_STREAM};
use guarantor_testkit::TestNats;

#[tokio::test]
async fn applying_the_streams_twice_changes_nothing() {
    let nats = TestNats::start().await;
    let js = jetstream(&connect(&nats.url(), "test").await.unwrap());

    let first = apply_streams(&js, 1).await.unwrap();
    let second = apply_streams(&js, 1).await.unwrap();

    assert_eq!(first, second);
    assert_eq!(first.len(), 3);
}

#[tokio::test]
async fn a_republished_message_id_is_stored_once_and_carries_the_request_id() {
    let nats = TestNats::start().await;
    let client = connect(&nats.url(), "test").await.unwrap();
    let js = jetstream(&client);
    apply_streams(&js, 1).await.unwrap();

    let mut acks = Vec::new();
    for _ in 0..2 {
        let ack = publish(
            &js,
            "guarantor.cmd.test".into(),
            "cmd-1",
            Some("req-42"),
            Bytes::from("a"),
        )
        .await;
        acks.push(ack.unwrap());
    }
    let (first, again) = (&acks[0], &acks[1]);

    assert!(!first.duplicate);
    assert!(again.duplicate);
    let mut stream = js.get_stream(COMMAND_STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let stored = stream.get_raw_message(first.sequence).await.unwrap();
    let headers = stored.headers;
    assert_eq!(headers.get("x-request-id").map(|v| v.as_str()), Some("req-42"));
}

/// Two tests running at once each see only their own server's messages.
#[tokio::test]
async fn parallel_tests_do_not_share_nats_state() {
    let (left, right) = tokio::join!(TestNats::start(), TestNats::start());
    assert_ne!(left.url_string(), right.url_string());
    let left_js = jetstream(&connect(&left.url(), "left").await.unwrap());
    let right_js = jetstream(&connect(&right.url(), "right").await.unwrap());
    apply_streams(&left_js, 1).await.unwrap();
    apply_streams(&right_js, 1).await.unwrap();

    publish(&left_js, "guarantor.cmd.only-left".into(), "m", None, Bytes::new())
        .await
        .unwrap();

    let mut right_stream = right_js.get_stream(COMMAND_STREAM).await.unwrap();
    assert_eq!(right_stream.info().await.unwrap().state.messages, 0);
    let mut left_stream = left_js.get_stream(COMMAND_STREAM).await.unwrap();
    assert_eq!(left_stream.info().await.unwrap().state.messages, 1);
    let names: Vec<String> = left_js
        .stream_names()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(names.len(), 3);
}
