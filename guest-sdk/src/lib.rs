//! Write recur task modules in Rust.
//!
//! A module is a WebAssembly component holding the logic of one task type. The recur host
//! calls it once per run of a task, each time in a fresh instance, and records the
//! [`Outcome`] it returns: when to run next and with what state, that the task is done,
//! that it failed, and which new tasks to create. The contract is the WIT world
//! `recur:task/task-module@0.1.0`; this crate hides it behind plain Rust types.
//!
//! # Example
//!
//! A module that counts its runs in its state and completes after five:
//!
//! ```
//! use std::time::Duration;
//!
//! use recur_guest::{Handler, Outcome, Task};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Deserialize, Serialize)]
//! struct State {
//!     count: u64,
//! }
//!
//! struct Counter;
//!
//! impl Handler for Counter {
//!     fn run(task: Task) -> Outcome {
//!         let mut state: State = match task.state_json() {
//!             Ok(state) => state.unwrap_or_default(),
//!             Err(e) => return recur_guest::fail(e.to_string()),
//!         };
//!         state.count += 1;
//!         recur_guest::info!("run {} of {}", state.count, task.key);
//!         let next = if state.count >= 5 {
//!             recur_guest::complete()
//!         } else {
//!             recur_guest::reschedule_after(Duration::from_secs(1))
//!         };
//!         next.with_state_json(&state)
//!     }
//! }
//!
//! recur_guest::export!(Counter);
//! ```
//!
//! The module crate has `crate-type = ["cdylib"]`, depends on this crate (and on serde
//! if it reads JSON), and is built with `cargo build --release --target wasm32-wasip2`,
//! which writes a component to `target/wasm32-wasip2/release/<crate>.wasm`.
//!
//! # A module without WASI
//!
//! A component built for `wasm32-wasip2` imports a dozen WASI interfaces that Rust's
//! standard library links in (environment, exit, the standard streams), which the host
//! must wire up at every instantiation. A module that needs none of them (no files, no
//! clock but [`now`], no randomness, no stdout) can be built without them:
//!
//! ```text
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-component-ld \
//!     cargo build --release --target wasm32-unknown-unknown
//! ```
//!
//! (`rustup target add wasm32-unknown-unknown` first; `wasm-component-ld` ships with
//! the toolchain.) The component then imports only `recur:task/host`, and a fresh
//! instance costs about 30% less: a noop run 5.8 µs instead of 7.8 µs, measured. For
//! that target this crate brings its own allocator (the `allocator` feature, on by
//! default), which serves the first 256 KiB from the initial memory: Rust's own grows
//! the memory in every fresh instance, and that made such a module slower than its
//! WASI build. With no stderr there, a panic's message is lost unless `run` calls
//! [`forward_panics`] first, which sends it to the host's log and so into the task's
//! error. Logging at all costs such a module about a microsecond per run: an import
//! that hands the host a string needs two more core instances at every instantiation.
//! Crates that need an operating system (a random source, the system clock) do not
//! work on this target; build for `wasm32-wasip2` when a module uses them.
//!
//! # A smaller stack
//!
//! After every run the host looks through the instance's whole memory for the pages the
//! run wrote, so a module's initial memory costs time even where the run never writes.
//! Most of it is the stack, 1 MiB by Rust's default. A module that recurses little can
//! link a smaller one from its `build.rs`. The stack sits at the bottom of the memory,
//! so a run that outgrows it traps with an out-of-bounds memory access, which fails
//! that task and nothing else; give the stack room to spare:
//!
//! ```text
//! fn main() {
//!     if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
//!         println!("cargo:rustc-link-arg-cdylib=-zstack-size=65536");
//!     }
//! }
//! ```
//!
//! `modules/noop` does: with a 64 KiB stack its memory starts at 384 KiB instead of
//! 2.1 MiB, and a run costs 5.3 µs instead of 5.9 µs, measured.
//!
//! The crate also compiles for other targets, so a module's unit tests can run natively:
//! they call the handler (`Counter::run(task)`) and compare what it returns with the
//! [`Outcome`] they expect. There [`now`] reads the system clock and log lines go to
//! stderr.
//!
//! # Layout
//!
//! - `bindings`: the code `wit_bindgen` generates for the world, and nothing else.
//! - `task`: [`Task`] and its JSON helpers, with [`DecodeError`].
//! - `outcome`: [`Outcome`] and the free functions that build one.
//! - `spawn`: [`Spawn`], a new task created with an outcome.
//! - `handler`: the [`Handler`] trait and the [`export!`] macro.
//! - `logging`: [`log`], [`Level`] and the `trace!` to `error!` macros.
//! - `time`: [`now`], and the conversions between WIT timestamps and `SystemTime`.
//! - `allocator`: the allocator of modules built for `wasm32-unknown-unknown`.
#![deny(missing_docs)]

#[cfg(all(feature = "allocator", target_arch = "wasm32", target_os = "unknown"))]
mod allocator;
#[doc(hidden)]
pub mod bindings;
mod handler;
mod logging;
mod outcome;
mod spawn;
mod task;
mod time;

pub use handler::Handler;
pub use logging::{Level, forward_panics, log};
pub use outcome::{Outcome, complete, fail, reschedule_after, reschedule_at, retry};
pub use spawn::Spawn;
pub use task::{DecodeError, Task};
pub use time::now;

#[doc(hidden)]
pub use handler::run as __run;
#[doc(hidden)]
pub use logging::log_args as __log_args;
// Re-exported so that module crates never depend on (and pin) wit-bindgen themselves.
#[doc(hidden)]
pub use wit_bindgen;
