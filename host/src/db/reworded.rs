//! Migrations whose comments were reworded after they shipped. sqlx checksums a
//! migration's whole text, comments included, and refuses to migrate a database whose
//! recorded checksum is not the embedded one. For each migration listed here, a database
//! that recorded the checksum of the text as it shipped gets the embedded checksum
//! recorded instead, before sqlx checks; any other checksum is still refused. A test
//! holds each entry to its promise: the embedded migration's statements (its text without
//! comments) are the statements that shipped.

use sqlx::PgPool;
use sqlx::migrate::Migrator;

const RECORD_REWORDED_SQL: &str = include_str!("../sql/record_reworded_migration.sql");

/// A migration reworded after it shipped.
struct Reworded {
    /// Its version.
    version: i64,
    /// The sha384, in hex, that sqlx recorded for its text as it shipped.
    shipped: &'static str,
    /// The sha384, in hex, of that text's statements (see `statements`): what the test
    /// below checks the embedded migration against. Only the test reads it.
    #[cfg_attr(not(test), allow(dead_code))]
    statements: &'static str,
}

/// Migrations 5 to 8 lost comments that cited measurements.
const REWORDED: &[Reworded] = &[
    Reworded {
        version: 5,
        shipped: "c09091fb802cf361deb63a1e11c3944fe59b3de793939cbff597cfc57997ada39a69ed30bcb834e1c7a9e5d67019e307",
        statements: "b97fc61cf8642406aa10e7906d0bb907adbbeef8b7385dc65d983a4d697367306687750f7ebd30eb9263ac2f31762482",
    },
    Reworded {
        version: 6,
        shipped: "a1a344abedaaecd5442fdffbb4ac297fb03b74bdbe76e195a87476e183a66c88ee315c2d0217509f91b11a5f6d44c6d1",
        statements: "4907097cd98516665a6b233d1657a435151efc9b7ac7d4f89269c75f1f7804412b34eea0fcc67022227243a0ddb3fe6e",
    },
    Reworded {
        version: 7,
        shipped: "189e791df78b52d74943487f226e483739326f99754c91f387340d7ee08ad141a86aff11d10a578ebfbff9fab8d807dd",
        statements: "bbafe6c7bb6f00a71679b812da874439df68a806a99e1b12faba4b90c6968a21ab943239dca4727162b9a387ebb438f4",
    },
    Reworded {
        version: 8,
        shipped: "852290921d1b038339a2158a183cb54287c49ed3f44cd7c119e9a466535a937b85984fb9599a5522215bf6f0f852ed01",
        statements: "fd50a2beee6a55bff5ae1470a2aef18326a3b4974c7fa7427d4688429fa66e0bed19fdacb85ed5e8dba1d501885763c5",
    },
];

/// Records the embedded checksum of every reworded migration that the database at
/// `pool` holds under the checksum it shipped with. The caller has made sure sqlx's
/// table of applied migrations exists.
pub(super) async fn record(pool: &PgPool, migrator: &Migrator) -> Result<(), sqlx::Error> {
    for reworded in REWORDED {
        let Some(migration) = migrator.iter().find(|m| m.version == reworded.version) else {
            continue;
        };
        sqlx::query(RECORD_REWORDED_SQL)
            .bind(reworded.version)
            .bind(reworded.shipped)
            .bind(migration.checksum.as_ref())
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// A migration's statements: its text without `--` comments or blank lines, each line
/// trimmed. (No migration listed here has `--` inside a string.)
#[cfg(test)]
fn statements(sql: &str) -> String {
    sql.lines()
        .map(|line| line.split("--").next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha384};

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_reworded_migration_runs_the_statements_it_shipped_with() {
        for reworded in REWORDED {
            let migration = super::super::MIGRATOR
                .iter()
                .find(|m| m.version == reworded.version)
                .expect("a reworded migration is embedded");
            let statements = hex(&Sha384::digest(statements(&migration.sql)));
            assert_eq!(
                statements, reworded.statements,
                "migration {} changed more than its comments",
                reworded.version
            );
            assert_ne!(hex(&migration.checksum), reworded.shipped);
        }
    }

    #[test]
    fn statements_drop_comments_and_blank_lines() {
        let sql = "-- why\nALTER TABLE t  -- how\n\n   SET (x = 1);\n";
        assert_eq!(statements(sql), "ALTER TABLE t\nSET (x = 1);");
    }
}
