//! The example modules compiled into the `recur` binary, so that a fresh installation can
//! deploy and run one without a Rust toolchain, and the paths of every module that
//! `build.rs` builds from `modules/`, for the tests.
//!
//! The examples' sources are `modules/noop`, `modules/counter` and `modules/crawler`;
//! `build.rs` builds them and copies the components to `$OUT_DIR/<name>.wasm`.

/// The paths of the components `build.rs` built from `modules/`: one
/// `<NAME>_COMPONENT` constant per crate (`NOOP_COMPONENT`, `MEMORY_BOMB_COMPONENT`, ...)
/// and `ALL_COMPONENTS`, a list of (crate name, path). For tests: the paths point into the
/// build's target directory, which an installed binary does not have.
#[doc(hidden)]
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/modules.rs"));
}

/// `component` with a custom section that holds `mark`: the same code under other bytes
/// and another sha256, so that a host compiles it on its own, as it would a module of
/// another author (the bench's `--distinct-modules`, and tests of many modules).
pub fn marked(component: &[u8], mark: &str) -> Vec<u8> {
    use wasm_encoder::ComponentSection;
    let mut bytes = component.to_vec();
    wasm_encoder::CustomSection {
        name: "recur-mark".into(),
        data: mark.as_bytes().into(),
    }
    .append_to_component(&mut bytes);
    bytes
}

/// An example module, embedded in the binary.
#[derive(Debug)]
pub struct Example {
    /// The module's name, which is also the task type it is meant to be deployed as.
    pub name: &'static str,
    /// One line saying what it does and which payload it reads.
    pub summary: &'static str,
    /// The component, as built for wasm32-wasip2.
    pub component: &'static [u8],
}

/// Every embedded example, in the order a newcomer should try them.
pub const EXAMPLES: &[Example] = &[
    Example {
        name: "noop",
        summary: r#"Reschedules itself every `every_ms` milliseconds, or completes without it; with `spawn`, spawns that many one-shot tasks keyed after it. Payload {"every_ms": 1000}"#,
        component: include_bytes!(concat!(env!("OUT_DIR"), "/noop.wasm")),
    },
    Example {
        name: "counter",
        summary: r#"Counts its runs in its state, completing after `runs`. Payload {"runs": 3, "every_ms": 1000}"#,
        component: include_bytes!(concat!(env!("OUT_DIR"), "/counter.wasm")),
    },
    Example {
        name: "crawler",
        summary: r#"Simulates a crawler revisiting pages and spawning the pages they link to. Key a URL such as https://site-0.example/page/0; payload {"sites": 50, "pages": 200, "fanout": 3, "min_ms": 1000, "max_ms": 60000}"#,
        component: include_bytes!(concat!(env!("OUT_DIR"), "/crawler.wasm")),
    },
];

/// Looks up an embedded example by name.
///
/// ```
/// let noop = recur_host::examples::example("noop").unwrap();
/// assert!(noop.component.starts_with(b"\0asm"));
/// assert!(recur_host::examples::example("nope").is_none());
/// ```
pub fn example(name: &str) -> Option<&'static Example> {
    EXAMPLES.iter().find(|example| example.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component's preamble: the wasm magic, then version 0x0d and layer 1 (a core
    /// module has version 1 and layer 0).
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn examples_are_components() {
        for example in EXAMPLES {
            assert!(
                example.component.starts_with(&COMPONENT_HEADER),
                "{} is not a component",
                example.name
            );
        }
    }

    #[test]
    fn every_built_module_is_a_component() {
        assert!(artifacts::ALL_COMPONENTS.len() >= EXAMPLES.len());
        for (name, path) in artifacts::ALL_COMPONENTS {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {path}: {e}"));
            assert!(
                bytes.starts_with(&COMPONENT_HEADER),
                "{name} is not a component"
            );
        }
    }
}
