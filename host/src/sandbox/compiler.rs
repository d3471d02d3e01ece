//! Compiling a component in a child process, bounded in time and memory. A component's
//! compile cannot be stopped from inside once it has started, and a component built to
//! be slow (or hungry) to compile would hold the host's cores (or memory) for as long as
//! it likes: in a child, it is killed at its limit, and the host keeps nothing of it.
//!
//! The child is the host's own executable, run with an argument that makes it call
//! [`serve`]: it reads the component from stdin, compiles it with the same settings as
//! the host's engine, and writes wasmtime's serialized artifact to stdout, which the
//! host loads.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine;

/// Where and within what a sandbox compiles components: in a child process of
/// `program` run with `args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiler {
    /// The host's own executable, which compiles when run with `args`.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Longest a compile may take; the child is killed past it.
    pub timeout: Duration,
    /// The child's address space, in bytes (RLIMIT_AS): what the compile may allocate,
    /// besides the executable itself.
    pub max_memory_bytes: u64,
}

/// Why a compile in a child failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CompileError {
    #[error(
        "compiling it took longer than this host allows ({0:?}), so the compile was stopped; deploy a smaller or simpler component"
    )]
    TooSlow(Duration),
    #[error("{0}")]
    Refused(String),
    #[error("the compile process failed: {0}")]
    Process(String),
}

/// Compiles `bytes` in a child process run as `compiler` says, and loads the result
/// into `engine`. Blocks for up to `compiler.timeout`.
pub(super) fn compile(
    compiler: &Compiler,
    engine: &Engine,
    bytes: &[u8],
) -> Result<Component, CompileError> {
    let mut command = Command::new(&compiler.program);
    command
        .args(&compiler.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let limit = compiler.max_memory_bytes;
    // SAFETY: the closure runs in the child between fork and exec, and only calls
    // setrlimit, which is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        CompileError::Process(format!("cannot start {}: {e}", compiler.program.display()))
    })?;
    // Written and read on threads of their own, so that neither pipe fills while the
    // other is waited on.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        // A child that dies early closes its end: the error says nothing more than its
        // exit status will.
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let deadline = Instant::now() + compiler.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = (writer.join(), reader.join(), errors.join());
                return Err(CompileError::TooSlow(compiler.timeout));
            }
            Err(e) => return Err(CompileError::Process(e.to_string())),
        }
    };
    let _ = writer.join();
    let out = reader
        .join()
        .expect("the reader thread does not panic")
        .map_err(|e| CompileError::Process(e.to_string()))?;
    let errors = errors.join().expect("the stderr thread does not panic");
    if !status.success() {
        let said = errors.trim();
        return Err(match status.code() {
            Some(REFUSED) => CompileError::Refused(said.to_owned()),
            _ => CompileError::Process(format!(
                "{status}{}{said} (a compile may use at most {} of memory)",
                if said.is_empty() { "" } else { ": " },
                super::human_bytes(compiler.max_memory_bytes as usize)
            )),
        });
    }
    // SAFETY: the artifact was made by this same executable's wasmtime, in a child of
    // this process, from settings that match `engine`'s; wasmtime checks both.
    unsafe { Component::deserialize(engine, &out) }
        .map_err(|e| CompileError::Process(format!("its artifact would not load: {e:#}")))
}

/// The child's exit status when the component itself is refused (not a process fault).
const REFUSED: i32 = 3;

/// The child's side: compiles the component on stdin with the host engine's compile
/// settings and `cache`, and writes the artifact to stdout. Returns the exit status.
pub fn serve(compile_cache: Option<PathBuf>) -> i32 {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("cannot read the component: {e}");
        return 1;
    }
    let cache = match compile_cache.as_deref().map(super::cache::open).transpose() {
        Ok(cache) => cache,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let engine = match Engine::new(&engine::compile_settings(cache)) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("{e:#}");
            return 1;
        }
    };
    let component = match Component::new(&engine, &bytes) {
        Ok(component) => component,
        Err(e) => {
            eprintln!("{}", super::one_line(&e));
            return REFUSED;
        }
    };
    match component.serialize() {
        Ok(artifact) => match std::io::stdout().write_all(&artifact) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cannot write the artifact: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("{e:#}");
            1
        }
    }
}
