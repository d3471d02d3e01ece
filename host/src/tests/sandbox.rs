//! The sandbox run directly, without a host: how small a fresh memory starts, which
//! memory slots stay warm, and the compilation cache.

use std::time::Duration;

use crate::examples::artifacts::NOOP_COMPONENT;
use crate::sandbox::{
    Carryover, DEFAULT_WARM_MODULES, Decision, RunLimits, Sandbox, SandboxConfig, Task,
};

/// A default tenant's noop task that reschedules itself, to run in a sandbox directly.
fn noop_task(key: &str) -> Task {
    Task {
        id: 1,
        tenant: "default".into(),
        task_type: "noop".into(),
        key: key.into(),
        payload: br#"{"every_ms": 1000}"#.to_vec(),
        state: None,
        attempt: 1,
        runs: 0,
        scheduled_at: 0,
    }
}

/// noop links a 64 KiB stack (modules/noop/build.rs) and the guest SDK's arena is
/// 256 KiB, so its memory starts at 384 KiB: a fresh run is cheaper the less memory the
/// host must look through for written pages. With Rust's 1 MiB stack it would not even
/// start under this ceiling.
#[test]
fn noop_starts_with_a_small_memory() {
    let sandbox = Sandbox::new(&SandboxConfig::default()).expect("a sandbox");
    let noop = sandbox
        .prepare(&std::fs::read(NOOP_COMPONENT).expect("noop is built"))
        .expect("noop is valid");
    let limits = RunLimits {
        memory_bytes: 512 << 10,
        timeout: Duration::from_secs(5),
    };
    let outcome = sandbox
        .run(
            &mut Carryover::default(),
            &noop,
            1,
            &noop_task("small"),
            limits,
            false,
        )
        .expect("noop runs within 512 KiB");
    assert!(
        matches!(outcome.decision, Decision::Reschedule(_)),
        "{:?}",
        outcome.decision
    );
}

/// A run's memory slot stays warm for its module afterwards, with the pages the run
/// touched resident, and the next run of another module takes a slot of its own while
/// the pool keeps fewer warm modules than the host asked for; with none asked for, it
/// takes the warm one over. More than the pool can hold is refused.
#[test]
fn memory_slots_stay_warm_for_as_many_modules_as_the_host_keeps() {
    // Two compilations of noop are two modules to the pool.
    let ran_two_modules = |warm_modules: u32| {
        let sandbox = Sandbox::new(&SandboxConfig {
            warm_modules,
            ..SandboxConfig::default()
        })
        .expect("a sandbox");
        let bytes = std::fs::read(NOOP_COMPONENT).expect("noop is built");
        // Both kept: a module's warm slots are cleared when its compilation is dropped.
        let modules = [(); 2].map(|()| sandbox.prepare(&bytes).expect("noop is valid"));
        for noop in &modules {
            let limits = RunLimits {
                memory_bytes: 1 << 20,
                timeout: Duration::from_secs(5),
            };
            sandbox
                .run(
                    &mut Carryover::default(),
                    noop,
                    1,
                    &noop_task("warm"),
                    limits,
                    false,
                )
                .expect("noop runs");
        }
        sandbox.warm_memories()
    };
    let (warm, resident) = ran_two_modules(DEFAULT_WARM_MODULES);
    assert_eq!(warm, 2, "each module's memory stays warm");
    assert!(resident > 0, "with the pages its run touched");
    assert_eq!(
        ran_two_modules(0).0,
        1,
        "no warm modules: one slot serves both"
    );

    let err = Sandbox::new(&SandboxConfig {
        warm_modules: u32::MAX,
        ..SandboxConfig::default()
    })
    .err()
    .expect("too many warm modules is refused");
    assert!(
        err.to_string().contains("warm modules must be at most"),
        "{err}"
    );
}

/// A second sandbox over the same compilation cache loads a module the first compiled
/// instead of compiling it again, and runs it; a directory other users could write, or
/// one that is not a directory, is refused with what to do.
#[test]
fn a_compilation_cache_serves_the_next_host_and_refuses_a_shared_directory() {
    let base = std::env::temp_dir().join(format!("recur-compile-cache-{}", std::process::id()));
    let dir = base.join("compiled");
    let bytes = std::fs::read(NOOP_COMPONENT).expect("noop is built");
    let limits = RunLimits {
        memory_bytes: 1 << 20,
        timeout: Duration::from_secs(5),
    };
    let prepare_and_run = |compile_cache: Option<&std::path::Path>| {
        let sandbox = Sandbox::new(&SandboxConfig {
            compile_cache: compile_cache.map(ToOwned::to_owned),
            ..SandboxConfig::default()
        })
        .expect("a sandbox");
        let noop = sandbox.prepare(&bytes).expect("noop is valid");
        sandbox
            .run(
                &mut Carryover::default(),
                &noop,
                1,
                &noop_task("cached"),
                limits,
                false,
            )
            .expect("noop runs");
        sandbox.compilations()
    };
    let first = prepare_and_run(Some(&dir));
    assert_eq!((first.compiled, first.cached), (1, 0), "nothing cached yet");
    let again = prepare_and_run(Some(&dir));
    assert_eq!(
        (again.compiled, again.cached),
        (0, 1),
        "loaded from the cache"
    );
    let without = prepare_and_run(None);
    assert_eq!(
        (without.compiled, without.cached),
        (1, 0),
        "no cache, compiled"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "created private to its user");

    let refused = |dir: &std::path::Path| {
        Sandbox::new(&SandboxConfig {
            compile_cache: Some(dir.to_owned()),
            ..SandboxConfig::default()
        })
        .err()
        .expect("the directory is refused")
        .to_string()
    };
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = refused(&dir);
    assert!(
        err.contains("writable by others") && err.contains("chmod go-w"),
        "{err}"
    );
    let file = base.join("a-file");
    std::fs::write(&file, b"").unwrap();
    let err = refused(&file);
    assert!(err.contains("it is not a directory"), "{err}");
    std::fs::remove_dir_all(&base).unwrap();
}
