//! A fleet of real `recur host` processes on one test database: start, SIGKILL, SIGSTOP,
//! SIGCONT and SIGTERM them, each with its stderr (its log, and so its share of the
//! ledger) in a file of its own. Dropping a fleet kills whatever still runs, so a failing
//! test leaves no process behind; the logs are kept when the test failed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::TestDb;

/// The log filter the hosts run with: every guest line (the ledger) and the host's own
/// info lines (start, stop, reconnect warnings), nothing else below warn.
const LOG_FILTER: &str = "warn,recur::guest=info,recur::cli=info,recur_host=info";

/// One `recur host` process, started by the fleet.
pub struct HostProc {
    /// Position in the fleet; ledger executions name their host by it.
    pub index: usize,
    child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// Set once it was SIGKILLed: its uncommitted executions may run again elsewhere.
    pub killed: bool,
    /// Set once it exited (killed or stopped) and was reaped.
    pub exit: Option<ExitStatus>,
}

/// Every host a test started, dead or alive.
pub struct Fleet {
    url: String,
    dir: PathBuf,
    args: Vec<String>,
    pub hosts: Vec<HostProc>,
}

impl Fleet {
    /// A fleet whose hosts run `recur host <args>` against `db`, logging into a fresh
    /// directory named after `name`.
    pub fn new(db: &TestDb, name: &str, args: &[&str]) -> Fleet {
        let dir = std::env::temp_dir().join(format!("recur-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Fleet {
            url: db.url.clone(),
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            hosts: Vec::new(),
        }
    }

    /// Starts one more host; returns its index.
    pub fn start(&mut self) -> usize {
        let index = self.hosts.len();
        let log = self.dir.join(format!("host-{index}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_recur"))
            .arg("host")
            .args(&self.args)
            .env("DATABASE_URL", &self.url)
            .env("RECUR_LOG", LOG_FILTER)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.hosts.push(HostProc {
            index,
            child,
            log,
            killed: false,
            exit: None,
        });
        index
    }

    /// Indexes of the hosts still running.
    pub fn live(&self) -> Vec<usize> {
        self.hosts
            .iter()
            .filter(|h| h.exit.is_none())
            .map(|h| h.index)
            .collect()
    }

    /// The process id of host `index`.
    pub fn pid(&self, index: usize) -> u32 {
        self.hosts[index].child.id()
    }

    /// Sends `signal` to host `index`.
    pub fn signal(&self, index: usize, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        let rc = unsafe { libc::kill(self.hosts[index].child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal}) of host {index} failed");
    }

    /// SIGKILLs host `index` and reaps it.
    pub fn kill9(&mut self, index: usize) {
        self.signal(index, libc::SIGKILL);
        let host = &mut self.hosts[index];
        host.exit = Some(host.child.wait().unwrap());
        host.killed = true;
    }

    /// Fails the test if a host that should be running has exited.
    pub fn assert_alive(&mut self) {
        for host in &mut self.hosts {
            if host.exit.is_none()
                && let Some(status) = host.child.try_wait().unwrap()
            {
                host.exit = Some(status);
                panic!(
                    "host {} exited by itself ({status}); its log: {}",
                    host.index,
                    tail(&host.log)
                );
            }
        }
    }

    /// Stops every live host gracefully; each must exit 0 within `timeout`. Returns the
    /// longest time one took.
    pub async fn stop_all(&mut self, timeout: Duration) -> Duration {
        let live = self.live();
        // Signal them all first, so they stop in parallel.
        for &index in &live {
            self.signal(index, libc::SIGTERM);
        }
        let mut longest = Duration::ZERO;
        for index in live {
            let (status, took) = self.stop_signalled(index, timeout).await;
            assert!(
                status.success(),
                "host {index} exited with {status} after SIGTERM; its log: {}",
                tail(&self.hosts[index].log)
            );
            longest = longest.max(took);
        }
        longest
    }

    /// Waits for host `index`, already sent SIGTERM, to exit; at most `timeout`.
    async fn stop_signalled(&mut self, index: usize, timeout: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let host = &mut self.hosts[index];
        loop {
            if let Some(status) = host.child.try_wait().unwrap() {
                host.exit = Some(status);
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < timeout,
                "host {index} did not exit within {timeout:?} of SIGTERM; its log: {}",
                tail(&host.log)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The concatenated logs of every host, for checks on what they said.
    pub fn all_logs(&self) -> String {
        self.hosts
            .iter()
            .map(|h| std::fs::read_to_string(&h.log).unwrap_or_default())
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            if host.exit.is_none() {
                let _ = host.child.kill();
                let _ = host.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("host logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last lines of a log, for failure messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
