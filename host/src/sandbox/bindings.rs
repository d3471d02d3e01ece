//! Host-side bindings for the `recur:task` world in `wit/`, generated at compile time.
//! Only the `bindgen!` call lives here; the host's side of each interface is in
//! `imports.rs`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "task-module",
});

pub use recur::task::host::Level;
pub use recur::task::types::{Decision, Reschedule, Spawn, When};
