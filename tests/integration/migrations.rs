//! Migrating a database recur migrated before: a migration whose comments were reworded
//! after it shipped is recorded anew, while any other change to a migration that ran is
//! still refused. And what the schema itself refuses, whoever writes.

use recur_host::db;

use crate::support::TestDb;

/// The checksum sqlx recorded for migration 8 as it shipped (see host/src/db/reworded.rs).
const SHIPPED_8: &str = "852290921d1b038339a2158a183cb54287c49ed3f44cd7c119e9a466535a937b85984fb9599a5522215bf6f0f852ed01";

async fn set_checksum(db: &TestDb, version: i64, hex: &str) {
    sqlx::query("UPDATE _sqlx_migrations SET checksum = decode($2, 'hex') WHERE version = $1")
        .bind(version)
        .bind(hex)
        .execute(&db.pool)
        .await
        .unwrap();
}

async fn checksum(db: &TestDb, version: i64) -> String {
    db.scalar(&format!(
        "SELECT encode(checksum, 'hex') FROM _sqlx_migrations WHERE version = {version}"
    ))
    .await
}

#[tokio::test]
async fn a_database_migrated_before_a_rewording_migrates_on() {
    let db = TestDb::new().await;
    let embedded = checksum(&db, 8).await;
    set_checksum(&db, 8, SHIPPED_8).await;
    db::migrate(&db.pool).await.unwrap();
    assert_eq!(checksum(&db, 8).await, embedded);
    db::migrate(&db.pool).await.unwrap();
}

#[tokio::test]
async fn a_migration_changed_otherwise_is_still_refused() {
    let db = TestDb::new().await;
    set_checksum(&db, 8, &"00".repeat(48)).await;
    let err = db::migrate(&db.pool).await.unwrap_err().to_string();
    assert!(err.contains("migration failed"), "{err}");
    assert_eq!(checksum(&db, 8).await, "00".repeat(48));
}

/// A task written past the doors, by hand, is refused by the table if its payload or
/// state is larger than any door allows: no task can be too large to claim alone.
#[tokio::test]
async fn the_table_refuses_a_payload_or_state_larger_than_the_doors_allow() {
    let db = TestDb::new().await;
    let insert = |bytes: usize| {
        sqlx::query("INSERT INTO tasks (tenant, task_type, key, payload) VALUES ('t', 'x', $1, $2)")
            .bind(format!("k{bytes}"))
            .bind(vec![0_u8; bytes])
            .execute(&db.pool)
    };
    insert(1 << 20).await.expect("1 MiB is what enqueue allows");
    let err = insert((1 << 20) + 1).await.unwrap_err();
    assert!(err.to_string().contains("tasks_payload_size"), "{err}");
    let state = |bytes: usize| {
        sqlx::query("UPDATE tasks SET state = $1 WHERE key = 'k1048576'")
            .bind(vec![0_u8; bytes])
            .execute(&db.pool)
    };
    state(256 << 10)
        .await
        .expect("256 KiB is what a run may keep");
    let err = state((256 << 10) + 1).await.unwrap_err();
    assert!(err.to_string().contains("tasks_state_size"), "{err}");
}
