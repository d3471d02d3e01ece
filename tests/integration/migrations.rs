//! Migrating a database recur migrated before: a migration whose comments were reworded
//! after it shipped is recorded anew, while any other change to a migration that ran is
//! still refused.

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
