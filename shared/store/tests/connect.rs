//! The services' Postgres connections, against a real server.

use guarantor_testkit::TestDb;

#[tokio::test]
async fn every_statement_is_planned_for_its_parameters() {
    let db = TestDb::new().await;
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(mode, "force_custom_plan");
}
