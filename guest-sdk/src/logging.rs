//! Writing to the host's log: [`log`], the [`Level`] it takes, and the `trace!` to
//! `error!` macros that format their arguments first.
//!
//! The host tags each line with the running task's id, tenant and type. A run may write
//! at most 100 lines, whatever their level and whether or not the host's filter keeps
//! them; the host drops and counts the lines past the hundredth, and cuts a line longer
//! than 4 KiB. Compiled for a target other than wasm, as in a module's unit tests, lines
//! go to stderr.

use std::fmt;

use crate::bindings::recur::task::host;

/// The severity of a log line, from least to most severe.
///
/// ```
/// recur_guest::log(recur_guest::Level::Warn, "payload has no `every_ms`; completing");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Step-by-step detail, usually filtered out.
    Trace,
    /// Detail useful while working on a module.
    Debug,
    /// What a run did, in one line.
    Info,
    /// Something unexpected that the run recovered from.
    Warn,
    /// Something that made the run fail.
    Error,
}

impl From<Level> for host::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        }
    }
}

/// Writes one line to the host's log.
///
/// The macros ([`info!`](crate::info) and its siblings) are usually handier: they take
/// format arguments.
///
/// ```
/// recur_guest::log(recur_guest::Level::Info, "visited");
/// ```
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    host::log(level.into(), message);
    // Off wasm there is no host to call (the generated import is a stub that panics), so
    // the line goes to stderr: a module's unit tests can then run its handler natively.
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Sends the message of a panic in this run to the host's log at error level, where the
/// host finds it to explain the trap that follows (the task's error then ends with
/// `; the module logged: <message>`).
///
/// Only a module built without WASI (`wasm32-unknown-unknown`, see the crate docs) needs
/// it: it has no stderr, so its panic messages are otherwise lost. Call it at the start
/// of `run`. It makes the module import the host's `log` if it did not log already, and
/// the host wires up every import at each instantiation, which is why it is not done for
/// every module. Elsewhere it does nothing: panics print to stderr, which the host reads.
///
/// ```
/// struct Careful;
///
/// impl recur_guest::Handler for Careful {
///     fn run(_task: recur_guest::Task) -> Result<recur_guest::Outcome, recur_guest::Error> {
///         recur_guest::forward_panics();
///         Ok(recur_guest::complete())
///     }
/// }
/// ```
pub fn forward_panics() {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| log(Level::Error, &info.to_string())))
        });
    }
}

/// Formats and writes one line; what the macros expand to.
///
/// A plain string literal is passed through without allocating.
#[doc(hidden)]
pub fn log_args(level: Level, args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(message) => log(level, message),
        None => log(level, &args.to_string()),
    }
}

/// Logs a line at [`Level::Trace`](crate::Level::Trace), with `format!` arguments.
///
/// ```
/// recur_guest::trace!("payload is {} bytes", 42);
/// ```
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::__log_args($crate::Level::Trace, ::core::format_args!($($arg)+))
    };
}

/// Logs a line at [`Level::Debug`](crate::Level::Debug), with `format!` arguments.
///
/// ```
/// let key = "https://site-3.example/page/17";
/// recur_guest::debug!("visited {key}");
/// ```
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::__log_args($crate::Level::Debug, ::core::format_args!($($arg)+))
    };
}

/// Logs a line at [`Level::Info`](crate::Level::Info), with `format!` arguments.
///
/// ```
/// recur_guest::info!("run {} of {}", 2, 3);
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::__log_args($crate::Level::Info, ::core::format_args!($($arg)+))
    };
}

/// Logs a line at [`Level::Warn`](crate::Level::Warn), with `format!` arguments.
///
/// ```
/// recur_guest::warn!("no state yet; starting from zero");
/// ```
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::__log_args($crate::Level::Warn, ::core::format_args!($($arg)+))
    };
}

/// Logs a line at [`Level::Error`](crate::Level::Error), with `format!` arguments.
///
/// ```
/// let status = 503;
/// recur_guest::error!("upstream answered {status}");
/// ```
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::__log_args($crate::Level::Error, ::core::format_args!($($arg)+))
    };
}
