//! The bindings `wit_bindgen` generates for the `recur:task/task-module` world.
//!
//! Nothing else lives here: the friendly types in the rest of the crate convert to and
//! from these, and `recur_guest::export!` wires a handler to the generated `Guest` trait.
// Generated code: the WIT carries the docs that matter, and the lowered `run` takes one
// argument per flattened field of `task`, more than clippy's default limit.
#![allow(missing_docs, clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../wit",
    world: "task-module",
    // The export macro is public so that `recur_guest::export!`, expanded in a module's
    // crate, can reach it; it is renamed so that the public name `export!` stays ours.
    pub_export_macro: true,
    export_macro_name: "__export_task_module",
    default_bindings_module: "recur_guest::bindings",
});
