//! `recur hosts`: the hosts running now, from the roster each keeps its row in.

use sqlx::PgPool;

use recur_host::roster::{self, HostEntry};

/// How long a live host may stay silent before it is shown as stalled: a few heartbeats.
const STALLED_MS: i64 = 3 * roster::BEAT_EVERY.as_millis() as i64;

#[derive(Debug, clap::Args)]
pub struct HostsArgs {
    /// One JSON array of the hosts instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(pool: &PgPool, args: HostsArgs) -> anyhow::Result<()> {
    let hosts = roster::list(pool).await?;
    if args.json {
        println!("{}", serde_json::to_string(&hosts)?);
        return Ok(());
    }
    if hosts.is_empty() {
        println!("no host is running");
        return Ok(());
    }
    print_table(&hosts);
    Ok(())
}

fn print_table(hosts: &[HostEntry]) {
    println!(
        "{:<16}  {:<20}  {:>7}  {:<7}  {:>7}  {:>9}  {:<20}  {:>9}",
        "id", "machine", "pid", "version", "workers", "in flight", "started", "last seen"
    );
    for h in hosts {
        let seen = if h.seen_ms_ago > STALLED_MS {
            format!("{:.0} s ago, stalled", h.seen_ms_ago as f64 / 1000.0)
        } else {
            format!("{:.1} s ago", h.seen_ms_ago.max(0) as f64 / 1000.0)
        };
        println!(
            "{:<16x}  {:<20}  {:>7}  {:<7}  {:>7}  {:>9}  {:<20}  {:>9}",
            h.id,
            h.hostname,
            h.pid,
            h.version,
            format!("{} {}", h.workers, h.claim_mode),
            format!("{}/{}", h.in_flight, h.max_in_flight),
            h.started_at.format("%Y-%m-%d %H:%M:%S"),
            seen
        );
    }
}
