//! A private, throwaway PostgreSQL cluster for the demo when no server is at hand:
//! `initdb` into a fresh temporary directory, `pg_ctl start` on a free loopback port,
//! and on drop `pg_ctl stop` and the directory removed. PostgreSQL refuses to run as
//! root, so as root the cluster runs as an unprivileged system user.

use std::ffi::CString;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why no private cluster could be started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL server binaries on this machine.
    #[error(
        "no PostgreSQL is reachable and none is installed to start a private one: set DATABASE_URL to a PostgreSQL you can use, start one on localhost:5432, or install the server (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; macOS: brew install postgresql)"
    )]
    NotInstalled,
    /// Running as root with no unprivileged user to run PostgreSQL as.
    #[error(
        "running as root and found no unprivileged user (postgres or nobody) to run a private PostgreSQL as; set DATABASE_URL instead"
    )]
    NoUser,
    /// A step failed.
    #[error("{step} failed: {detail}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// Why it failed.
        detail: String,
    },
}

/// A running private cluster. Dropping it stops the server and deletes its files.
pub struct PrivateCluster {
    /// The temporary directory holding the data directory, socket and log.
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    /// The (uid, gid) PostgreSQL runs as when this process is root.
    run_as: Option<(u32, u32)>,
}

impl PrivateCluster {
    /// Creates and starts a cluster.
    pub fn start() -> Result<PrivateCluster, ClusterError> {
        let bin = find_bin_dir().ok_or(ClusterError::NotInstalled)?;
        // SAFETY: geteuid has no preconditions.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(
                ["postgres", "nobody"]
                    .iter()
                    .find_map(|name| user_ids(name))
                    .ok_or(ClusterError::NoUser)?,
            )
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!(
            "recur-demo-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&dir).map_err(|e| step("creating the cluster directory", e))?;
        let cluster = PrivateCluster {
            dir,
            port: free_port()?,
            bin,
            run_as,
        };
        std::fs::set_permissions(&cluster.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| step("securing the cluster directory", e))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&cluster.dir, Some(uid), Some(gid))
                .map_err(|e| step("handing the cluster directory to the postgres user", e))?;
        }
        cluster.pg("initdb", |c| {
            c.arg("-D").arg(cluster.data()).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]);
        })?;
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            cluster.port,
            cluster.dir.display()
        );
        cluster.pg("pg_ctl", |c| {
            c.arg("-D")
                .arg(cluster.data())
                .arg("-l")
                .arg(cluster.dir.join("server.log"));
            c.args(["-w", "-t", "60", "-o", &options, "start"]);
        })?;
        Ok(cluster)
    }

    /// The URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The directory the cluster lives in (gone once the cluster is dropped).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs a PostgreSQL program from the bin directory, as the unprivileged user when
    /// root, and turns a failure into its output.
    fn pg(
        &self,
        program: &'static str,
        args: impl FnOnce(&mut Command),
    ) -> Result<(), ClusterError> {
        let mut command = Command::new(self.bin.join(program));
        args(&mut command);
        command.current_dir(&self.dir).stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid).env("HOME", &self.dir);
        }
        let output = command.output().map_err(|e| step(program, e))?;
        if !output.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            let detail = format!(
                "{} {}{}",
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim(),
                log.lines()
                    .last()
                    .map(|l| format!(" (server log: {l})"))
                    .unwrap_or_default()
            );
            return Err(ClusterError::Step {
                step: program,
                detail: detail.trim().to_owned(),
            });
        }
        Ok(())
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let stopped = self.pg("pg_ctl", |c| {
                c.arg("-D")
                    .arg(self.data())
                    .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
            });
            if let Err(err) = stopped {
                tracing::warn!(error = %err, "could not stop the private PostgreSQL");
            }
        }
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(error = %err, dir = %self.dir.display(), "could not remove the private cluster");
        }
    }
}

/// The directory with `initdb` and `pg_ctl`: from PATH, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian keeps the server binaries off PATH).
fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_both(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The uid and gid of a local user, if it exists.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // SAFETY: getpwnam returns NULL or a pointer to a static record that stays valid
    // until the next call; the fields are copied out at once, on one thread.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    (uid != 0).then_some((uid, gid))
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| step("finding a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| step("finding a free port", e))
}

fn step(step: &'static str, err: impl std::fmt::Display) -> ClusterError {
    ClusterError::Step {
        step,
        detail: err.to_string(),
    }
}
