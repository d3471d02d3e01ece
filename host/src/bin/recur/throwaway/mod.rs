//! A throwaway database for the demo and the bench. The server is DATABASE_URL's if
//! set, else a PostgreSQL on localhost:5432 if one answers, else a private cluster
//! started for the occasion (see `cluster.rs`); on it a database of the given name is
//! dropped and created afresh. Dropping the [`Throwaway`] stops and removes a private
//! cluster; a database on a real server is left for inspection.

mod cluster;

use anyhow::Context;
use sqlx::{Connection, PgConnection};

pub use cluster::PrivateCluster;

use recur_host::db;

/// Set to 1 to start a private cluster even when a server answers (tests use it to
/// exercise that path).
pub const FORCE_PRIVATE_ENV: &str = "RECUR_DEMO_PRIVATE_CLUSTER";
/// Where to look for a server when DATABASE_URL is not set.
const LOCAL_SERVER: &str = "postgres://postgres@localhost:5432/postgres";

/// A fresh database, and the private cluster holding it, if one was started.
pub struct Throwaway {
    /// The fresh database's URL.
    pub url: String,
    /// Where the server came from, for people: `DATABASE_URL`, localhost, or the
    /// private cluster's directory.
    pub description: String,
    cluster: Option<PrivateCluster>,
}

impl Throwaway {
    /// Finds or starts a server and creates database `name` on it, replacing one of that
    /// name.
    pub async fn create(name: &str) -> anyhow::Result<Throwaway> {
        let forced = std::env::var(FORCE_PRIVATE_ENV).is_ok_and(|v| v == "1");
        let mut cluster = None;
        let (server, description) = if forced {
            start_private(&mut cluster)?
        } else if let Ok(url) = std::env::var("DATABASE_URL") {
            (url, "DATABASE_URL".to_owned())
        } else if PgConnection::connect(LOCAL_SERVER).await.is_ok() {
            (
                LOCAL_SERVER.to_owned(),
                "the PostgreSQL on localhost:5432".to_owned(),
            )
        } else {
            start_private(&mut cluster)?
        };
        let url = fresh_database(&server, name).await?;
        Ok(Throwaway {
            url,
            description,
            cluster,
        })
    }

    /// The private cluster's directory, if one was started (gone once this is dropped).
    pub fn cluster_dir(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.dir().display().to_string())
    }
}

fn start_private(cluster: &mut Option<PrivateCluster>) -> anyhow::Result<(String, String)> {
    eprintln!("starting a private PostgreSQL cluster…");
    let started = PrivateCluster::start()?;
    let url = started.url();
    let shown = format!(
        "a private PostgreSQL cluster in {}",
        started.dir().display()
    );
    *cluster = Some(started);
    Ok((url, shown))
}

/// Drops and recreates database `name` on `server`; returns its URL.
async fn fresh_database(server: &str, name: &str) -> anyhow::Result<String> {
    let mut conn = PgConnection::connect(server)
        .await
        .with_context(|| format!("cannot connect to {}", db::hide_password(server)))?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .with_context(|| {
            format!(
                "cannot create database {name}; use a DATABASE_URL whose role may CREATE DATABASE"
            )
        })?;
    conn.close().await.ok();
    Ok(with_database(server, name))
}

/// `postgres://user@host:port/db?options` -> `postgres://user@host:port/<database>?options`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{database}{query}", &base[..host_end])
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn swaps_the_database_and_keeps_the_options() {
        assert_eq!(
            with_database("postgres://u@h:5/db?sslmode=disable", "x"),
            "postgres://u@h:5/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
    }
}
