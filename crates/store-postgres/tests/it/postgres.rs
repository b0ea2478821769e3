//! What only the PostgreSQL adapter has, the schema comparison with SQLite,
//! and the backup round trips that start from PostgreSQL.

use store::{Store, StoreError};
use store_postgres::{PgOptions, PgStore};
use test_kit::fixtures::pg_admin_url;
use test_kit::{PgFixture, SqliteFixture, StoreFixture, story};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_stay_in_step() {
    let (sqlite, pg) = (SqliteFixture::create().await, PgFixture::create().await);
    let lite = sqlite.store.schema_columns().await.unwrap();
    let post = pg.store.schema_columns().await.unwrap();
    assert!(
        lite.iter()
            .any(|(t, c)| t == "resource_versions" && c == "ciphertext"),
        "{lite:?}"
    );
    // Every identity table (migration 2) is compared too.
    for (table, column) in [
        ("accounts", "username_key"),
        ("credentials", "totp_last_step"),
        ("recovery_codes", "code_hash"),
        ("passkeys", "credential_id"),
        ("factor_failures", "next_allowed_at"),
        ("address_failures", "disabled"),
        ("sessions", "id_hash"),
        // Privacy monitoring (migration 6).
        ("monitor_state", "processed"),
        ("monitor_explanations", "sealed"),
        ("monitor_cases", "subject"),
        ("monitor_alerts", "case_id"),
        ("monitor_case_notes", "seq"),
        ("monitor_suppressions", "revoked"),
        // Telehealth consults (migration 7).
        ("consult_rooms", "appointment"),
        ("consult_rooms", "consult_end"),
        ("consult_invites", "failures"),
        ("consult_invites", "verified_at"),
    ] {
        assert!(
            lite.iter().any(|(t, c)| t == table && c == column),
            "{table}.{column} missing: {lite:?}"
        );
    }
    assert_eq!(
        lite, post,
        "SQLite and PostgreSQL schemas differ in tables or columns"
    );
    sqlite.teardown().await;
    pg.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_load_round_trip_postgres_to_postgres() {
    test_kit::run_pair::<PgFixture, PgFixture, _, _>(|a, b| async move {
        story::dump_load_round_trip(&*a, &*b).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_load_round_trip_postgres_to_sqlite() {
    test_kit::run_pair::<PgFixture, SqliteFixture, _, _>(|a, b| async move {
        story::dump_load_round_trip(&*a, &*b).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_dump_load_round_trip_postgres_to_sqlite() {
    test_kit::run_pair::<PgFixture, SqliteFixture, _, _>(|a, b| async move {
        test_kit::story_monitor::monitor_dump_load_round_trip(&*a, &*b).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consult_dump_load_round_trip_postgres_to_sqlite() {
    test_kit::run_pair::<PgFixture, SqliteFixture, _, _>(|a, b| async move {
        test_kit::story_consult::consult_dump_load_round_trip(&*a, &*b).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_check_refuses_synchronous_commit_off() {
    let admin = pg_admin_url();
    let name = PgFixture::create_database(&admin).await;
    let url = test_kit::fixtures::pg_url_for(&admin, &name);
    let sep = if url.contains('?') { '&' } else { '?' };
    let bad = format!("{url}{sep}options[synchronous_commit]=off");

    match PgStore::connect(&bad, PgOptions::default()).await {
        Err(StoreError::Durability(msg)) => assert!(msg.contains("synchronous_commit"), "{msg}"),
        other => panic!("expected a durability error, got {other:?}"),
    }
    let store = PgStore::connect(
        &bad,
        PgOptions {
            allow_unsafe_durability: true,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        store.check_durability().await,
        Err(StoreError::Durability(_))
    ));
    store.close().await;

    let good = PgStore::connect(&url, PgOptions::default()).await.unwrap();
    good.check_durability().await.unwrap();
    good.close().await;
    PgFixture::drop_database(&admin, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_migrating_at_once_agree() {
    let admin = pg_admin_url();
    let name = PgFixture::create_database(&admin).await;
    let url = test_kit::fixtures::pg_url_for(&admin, &name);
    let stores: Vec<PgStore> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                PgStore::connect(
                    &url,
                    PgOptions {
                        max_connections: 2,
                        ..PgOptions::default()
                    },
                )
                .await
                .unwrap(),
            );
        }
        v
    };
    let tasks: Vec<_> = stores
        .iter()
        .cloned()
        .map(|s| tokio::spawn(async move { s.migrate().await }))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    story::populate(&stores[0]).await;
    for s in &stores {
        s.close().await;
    }
    PgFixture::drop_database(&admin, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_two_nodes_append_to_one_gap_free_log() {
    let fixture = PgFixture::create().await;
    // A second node: its own pool on the same database.
    let other = PgStore::connect(&fixture.url(), PgOptions::default())
        .await
        .unwrap();
    let a: std::sync::Arc<dyn Store> = fixture.store.clone();
    let b: std::sync::Arc<dyn Store> = std::sync::Arc::new(other.clone());
    let outcome =
        tokio::spawn(async move { story::audit_two_nodes_share_one_log(&a, &b).await }).await;
    other.close().await;
    fixture.teardown().await;
    outcome.unwrap();
}
