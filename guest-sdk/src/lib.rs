//! Write recur task modules in Rust.
//!
//! recur runs recurring tasks stored in PostgreSQL. The logic of a task type lives in a
//! *module*: a WebAssembly component, deployed per tenant, that the host calls once per
//! run of a task. The contract is the WIT world `recur:task/task-module@0.1.0`
//! (`wit/recur.wit`); this crate hides it behind plain Rust types.
//!
//! # The handler
//!
//! A module is one type that implements [`Handler`]: a function from the [`Task`] being
//! run (its key, its payload, the state its last run left, which attempt this is) to an
//! [`Outcome`] (run again later, complete, retry, fail, plus a new state and new tasks to
//! create). [`export!`] makes that type the component's `run` export.
//!
//! A module that counts its runs in its state, and completes once it has run as often
//! as its payload asks:
//!
//! ```
//! use std::time::Duration;
//!
//! use recur_guest::{Error, Handler, Outcome, Task};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Payload {
//!     runs: u64,
//! }
//!
//! #[derive(Default, Deserialize, Serialize)]
//! struct State {
//!     count: u64,
//! }
//!
//! struct Counter;
//!
//! impl Handler for Counter {
//!     fn run(task: Task) -> Result<Outcome, Error> {
//!         let payload: Payload = task.payload_json()?;
//!         let mut state: State = task.state_json()?.unwrap_or_default();
//!         state.count += 1;
//!         recur_guest::info!("run {} of {} for {}", state.count, payload.runs, task.key);
//!         let next = if state.count >= payload.runs {
//!             recur_guest::complete()
//!         } else {
//!             recur_guest::reschedule_after(Duration::from_secs(60))
//!         };
//!         Ok(next.with_state_json(&state)?)
//!     }
//! }
//!
//! recur_guest::export!(Counter);
//! ```
//!
//! Its `Cargo.toml` makes the crate a `cdylib` and depends on this crate, and on serde
//! for its JSON:
//!
//! ```toml
//! [package]
//! name = "counter"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! recur-guest = { path = "../recur/guest-sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! # Building and deploying
//!
//! ```text
//! rustup target add wasm32-wasip2
//! cargo build --target wasm32-wasip2 --release
//! ```
//!
//! writes the component to `target/wasm32-wasip2/release/<crate>.wasm` (with the
//! crate's dashes as underscores). Deploy it as the module of a task type for a tenant,
//! then give that type tasks:
//!
//! ```text
//! recur module deploy counter target/wasm32-wasip2/release/counter.wasm --tenant acme
//! recur enqueue counter daily-report --payload '{"runs": 5}' --tenant acme
//! ```
//!
//! The host checks the component against the world when it is deployed and refuses one
//! that does not match. Deploying a new component makes a new version of the module,
//! which running hosts pick up within seconds; `recur module deploy --help` lists the
//! options, among them `--reuse-instance` (see
//! [*What lasts from one run to the next*](Handler#what-lasts-from-one-run-to-the-next)).
//!
//! # Outcomes
//!
//! Each run ends with one decision about its task, made by one of five functions:
//!
//! | function | the task |
//! |---|---|
//! | [`reschedule_after`]`(delay)` | runs again `delay` after the outcome is recorded |
//! | [`reschedule_at`]`(time)` | runs again at `time` |
//! | [`complete`]`()` | is done and never runs again |
//! | [`retry`]`(message)` | failed for now: it runs again after an exponential backoff, and is parked as failed after the tenant's maximum attempts |
//! | [`fail`]`(message)` | failed for good: it is parked as failed with `message` |
//!
//! Each returns an [`Outcome`], whose methods add the new state
//! ([`with_state`](Outcome::with_state), [`with_state_json`](Outcome::with_state_json))
//! and the tasks to create ([`spawn`](Outcome::spawn), [`spawns`](Outcome::spawns)).
//! The host records all of an outcome in one commit, or none of it.
//!
//! They are free functions rather than constructors on [`Outcome`] because a handler's
//! last expression then reads as the decision it makes, `reschedule_after(every)` or
//! `fail("no url")`, and the type name, which says nothing the function name does not,
//! stays out of the way. There is one way to make each outcome, and this is it.
//!
//! # Errors
//!
//! [`Handler::run`] returns `Result<Outcome, Error>`, and any error type converts into
//! [`Error`], so `?` works in a handler: on a payload or state that is not the JSON
//! asked for ([`DecodeError`]), on a state or spawn payload that cannot be written as
//! JSON ([`EncodeError`]), and on the errors of other crates. An `Err` fails the task
//! with the error's message, as [`fail`] would. Nothing is turned into a failure behind
//! the handler's back: every call that can go wrong returns a `Result`, and the handler
//! decides whether to pass it up, retry, or carry on.
//!
//! A panic is different: it traps, the run returns no outcome at all, and the host
//! treats the fault as transient and retries the task. Return an error instead where
//! retrying cannot help.
//!
//! # State
//!
//! The payload is given when a task is enqueued and never changes; the state is the
//! module's to keep. A run reads the state its task's last run left with
//! [`Task::state_json`] (`None` on the first run) and sets the next with
//! [`Outcome::with_state_json`] (or raw bytes with [`Outcome::with_state`]). An outcome
//! that sets no state keeps the current one; [`retry`] and [`fail`] always keep it. The
//! state is the only thing a task carries from one run to the next.
//!
//! # Memory between runs
//!
//! By default each run gets a fresh instance of the module. A module deployed with
//! `--reuse-instance` may instead be called again in the instance a worker kept from an
//! earlier run of the same module version and tenant, so its statics and heap may
//! survive from one task to another of the same tenant, for a bounded number of runs and
//! a bounded growth of memory. Never rely on that either way: a static may be reset at
//! any run, and may hold what another task left. The details are in
//! [*What lasts from one run to the next*](Handler#what-lasts-from-one-run-to-the-next).
//!
//! # Spawns
//!
//! An outcome can create new tasks in the same tenant: [`Spawn::new`]`(type, key)`,
//! with a payload ([`Spawn::payload_json`], [`Spawn::payload`]) and a first run time
//! ([`Spawn::after`], [`Spawn::at`]; by default at once). Tasks are unique by tenant,
//! type and key, so spawning a task that exists already changes nothing. Spawns are
//! created only with a reschedule or a complete; an outcome that retries or fails
//! creates none.
//!
//! # Logs
//!
//! [`info!`], [`warn!`], [`error!`], [`debug!`] and [`trace!`] take `format!` arguments
//! and write one line to the host's log, tagged with the task's id, tenant and type
//! ([`log`] takes a [`Level`] and a `&str`).
//!
//! # Time
//!
//! [`now`] is the host's clock: use it rather than `SystemTime::now()`, since it is the
//! clock the host checks [`reschedule_at`] times against (and a module built without
//! WASI has no other). [`Task::scheduled_at`] is when the run was due, so a task can keep
//! its phase by rescheduling relative to it rather than to when it ran.
//!
//! # Limits
//!
//! An outcome that breaks one of these limits fails its task for good, with a message
//! that names the limit, and nothing of it is kept (`wit/recur.wit`):
//!
//! - a state of at most 256 KiB;
//! - at most 1000 spawns per run, each with a task type of 1 to 200 bytes of ASCII
//!   letters, digits and `. _ - : /` starting with a letter or digit, a key of 1 to 2048
//!   bytes without NUL, and a payload of at most 256 KiB;
//! - times ([`reschedule_at`], [`Spawn::at`]) at most an hour in the past and at most ten
//!   years ahead.
//!
//! A run may write at most 100 log lines, whatever their level; the host drops the rest
//! and counts them, and cuts a line longer than 4 KiB.
//!
//! Each tenant also has a deadline per run and a memory limit per instance, set by
//! whoever runs recur. A run that goes past either is stopped, and the host retries the
//! task as it retries a trap.
//!
//! The host grants nothing but `recur:task/host` (logging and the clock): the WASI
//! interfaces that Rust's standard library links in are present, but see no files, no
//! environment variables, no arguments and no network.
//!
//! # Testing a module
//!
//! The crate also compiles for the machine's own target, so a module's unit tests run
//! with plain `cargo test`: they build a [`Task`] (its fields are public), call the
//! handler (`Counter::run(task)`) and compare the [`Outcome`] it returns with the one
//! they expect. There [`now`] reads the system clock and log lines go to stderr.
//!
//! # A module without WASI
//!
//! A component built for `wasm32-wasip2` imports a dozen WASI interfaces that Rust's
//! standard library links in (environment, exit, the standard streams), which the host
//! must wire up at every instantiation. A module that needs none of them (no files, no
//! clock but [`now`], no randomness, no stdout) can be built without them, and then
//! imports only `recur:task/host`:
//!
//! ```text
//! rustup target add wasm32-unknown-unknown
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-component-ld \
//!     cargo build --target wasm32-unknown-unknown --release
//! ```
//!
//! (`wasm-component-ld` ships with the toolchain.) The component is
//! `target/wasm32-unknown-unknown/release/<crate>.wasm`, deployed like any other. For
//! that target this crate brings its own allocator (the `allocator` feature, on by
//! default), which serves the first 256 KiB from the module's initial memory instead of
//! growing the memory in every fresh instance. With no stderr there, a panic's message
//! is lost unless `run` calls [`forward_panics`] first, which sends it to the host's log
//! and so into the task's error. Crates that need an operating system (a random source,
//! the system clock) do not work on this target; build for `wasm32-wasip2` when a module
//! uses them.
//!
//! # A smaller stack
//!
//! Every fresh instance starts with the module's whole initial memory, and most of that
//! is the stack, 1 MiB by Rust's default. A module that recurses little can link a
//! smaller one from its `build.rs`. The stack sits at the bottom of the memory, so a run
//! that outgrows it traps with an out-of-bounds memory access, which fails that try of
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
//! # Layout
//!
//! - `handler`: the [`Handler`] trait and the [`export!`] macro.
//! - `task`: [`Task`] and its JSON helpers.
//! - `outcome`: [`Outcome`] and the functions that make one.
//! - `spawn`: [`Spawn`], a new task created with an outcome.
//! - `error`: [`Error`], [`DecodeError`] and [`EncodeError`].
//! - `logging`: [`log`], [`Level`], [`forward_panics`] and the `trace!` to `error!`
//!   macros.
//! - `time`: [`now`], and the conversions between WIT timestamps and `SystemTime`.
//! - `allocator`: the allocator of modules built for `wasm32-unknown-unknown`.
//! - `bindings`: the code `wit_bindgen` generates for the world, and nothing else.
#![deny(missing_docs)]

#[cfg(all(feature = "allocator", target_arch = "wasm32", target_os = "unknown"))]
mod allocator;
#[doc(hidden)]
pub mod bindings;
mod error;
mod handler;
mod logging;
mod outcome;
mod spawn;
mod task;
mod time;

pub use error::{DecodeError, EncodeError, Error};
pub use handler::Handler;
pub use logging::{Level, forward_panics, log};
pub use outcome::{Outcome, complete, fail, reschedule_after, reschedule_at, retry};
pub use spawn::Spawn;
pub use task::Task;
pub use time::now;

#[doc(hidden)]
pub use handler::run as __run;
#[doc(hidden)]
pub use logging::log_args as __log_args;
// Re-exported so that module crates never depend on (and pin) wit-bindgen themselves.
#[doc(hidden)]
pub use wit_bindgen;
