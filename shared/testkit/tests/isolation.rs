//! Each test's database is its own: what one test writes, a test running beside it never sees.

use guarantor_testkit::TestDb;

#[tokio::test]
async fn parallel_tests_do_not_share_database_state() {
    let (left, right) = tokio::join!(TestDb::new(), TestDb::new());
    assert_ne!(left.name(), right.name());

    sqlx::query("INSERT INTO tenants (name) VALUES ('only-left')")
        .execute(&left.pool)
        .await
        .unwrap();

    let count = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tenants")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(&left).await, 1);
    assert_eq!(count(&right).await, 0);
}

#[tokio::test]
async fn a_test_database_is_dropped_with_its_value() {
    let db = TestDb::new().await;
    let name = db.name().to_owned();
    let admin = TestDb::new().await;

    db.pool.close().await;
    drop(db);

    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&admin.pool)
        .await
        .unwrap();
    assert!(!exists, "{name} was dropped");
}
