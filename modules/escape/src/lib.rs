//! Tries what the sandbox must deny, and completes with a report instead of panicking:
//! state `{"fs_read", "fs_list", "env", "args", "tcp", "dns"}`. Each text field is "ok"
//! when the attempt got through (for `fs_list`, when either `/` or `.` could be listed)
//! and otherwise the error it met; `env` and `args` count what was visible.
use std::net::{TcpStream, ToSocketAddrs};
use std::{env, fs, io};

use recur_guest::{Error, Handler, Outcome, Task};

#[derive(serde::Serialize)]
struct Report {
    fs_read: String,
    fs_list: String,
    env: usize,
    args: usize,
    tcp: String,
    dns: String,
}

struct Escape;

impl Handler for Escape {
    fn run(_task: Task) -> Result<Outcome, Error> {
        let fs_list = match (fs::read_dir("/"), fs::read_dir(".")) {
            (Err(root), Err(cwd)) => format!("/: {root}; .: {cwd}"),
            _ => "ok".to_owned(),
        };
        let report = Report {
            fs_read: describe(fs::read("/etc/passwd")),
            fs_list,
            // The `_os` variants, because the others panic on values that are not UTF-8.
            env: env::vars_os().count(),
            args: env::args_os().count(),
            tcp: describe(TcpStream::connect("127.0.0.1:5432")),
            dns: describe(("localhost", 0).to_socket_addrs()),
        };
        Ok(recur_guest::complete().with_state_json(&report)?)
    }
}

fn describe<T>(result: io::Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    }
}

recur_guest::export!(Escape);
