//! Nothing of one tenant's run reaches the next instance in its memory slot, under each
//! memory reset recur uses: `residue` writes a marker across 8 MiB of its memory for one
//! tenant, and then, for another tenant, a module of other bytes (so another
//! compilation) takes the same slot and reads its whole memory, 16 MiB, for it.

use std::time::Duration;

use crate::examples::artifacts::RESIDUE_COMPONENT;
use crate::examples::marked;
use crate::sandbox::{
    Carryover, Decision, MemoryReset, Prepared, RunLimits, Sandbox, SandboxConfig, SandboxError,
    Task,
};

/// `tenant`'s residue task with `payload`.
fn task(tenant: &str, payload: &str) -> Task {
    Task {
        id: 1,
        tenant: tenant.into(),
        task_type: "residue".into(),
        key: "k".into(),
        payload: payload.as_bytes().to_vec(),
        state: None,
        attempt: 1,
        runs: 0,
        scheduled_at: 0,
    }
}

/// Runs `task` on `module`, in the instance `carry` keeps where `reuse` allows, and
/// returns the state it completed with.
fn run(
    sandbox: &Sandbox,
    carry: &mut Carryover,
    module: &Prepared,
    task: &Task,
    reuse: bool,
) -> String {
    let limits = RunLimits {
        memory_bytes: 32 << 20,
        timeout: Duration::from_secs(20),
    };
    let outcome = sandbox
        .run(carry, module, 1, task, limits, reuse)
        .expect("residue runs");
    match outcome.decision {
        Decision::Complete(state) => String::from_utf8(state.unwrap_or_default()).unwrap(),
        other => panic!("residue decided {other:?}"),
    }
}

const WRITE: &str = r#"{"mode": "write", "key": 90, "bytes": 8388608}"#;
const SCAN: &str = r#"{"mode": "scan", "key": 90, "bytes": 16777216}"#;

#[test]
fn a_memory_slot_keeps_nothing_of_its_last_run_for_the_next_tenant() {
    let bytes = std::fs::read(RESIDUE_COMPONENT).expect("residue is built");
    let mut tried = Vec::new();
    for reset in [MemoryReset::PageScan, MemoryReset::Madvise] {
        // One run at a time and no warm modules: the next module takes the slot the last
        // one left, whoever's module it is.
        let sandbox = match Sandbox::new(&SandboxConfig {
            concurrent_runs: 1,
            warm_modules: 0,
            memory_reset: Some(reset),
            ..SandboxConfig::default()
        }) {
            Ok(sandbox) => sandbox,
            Err(err @ (SandboxError::PageScanUnavailable(_) | SandboxError::PageScanWithSwap)) => {
                println!("SKIPPED the {} reset: {err}", reset.name());
                continue;
            }
            Err(err) => panic!("{err}"),
        };
        let writer = sandbox.prepare(&bytes).unwrap();
        let reader = sandbox.prepare(&marked(&bytes, "reader")).unwrap();

        // The scan finds the marker where it is: in the instance that wrote it, kept.
        let mut carry = Carryover::default();
        run(&sandbox, &mut carry, &writer, &task("acme", WRITE), true);
        let kept = run(&sandbox, &mut carry, &writer, &task("acme", SCAN), true);
        assert!(
            !kept.starts_with(r#"{"hits":0,"#),
            "{}: {kept}",
            reset.name()
        );
        drop(carry);

        // Another tenant's module, fresh in the same slot, finds none of it.
        run(
            &sandbox,
            &mut Carryover::default(),
            &writer,
            &task("acme", WRITE),
            false,
        );
        let found = run(
            &sandbox,
            &mut Carryover::default(),
            &reader,
            &task("globex", SCAN),
            false,
        );
        assert!(
            found.starts_with(r#"{"hits":0,"#),
            "{}: {found}",
            reset.name()
        );
        assert_eq!(sandbox.warm_memories().0, 1, "one slot served both");
        println!(
            "FIGURES hygiene: {} reset: the next tenant found {found}; the writer's kept instance {kept}",
            reset.name()
        );
        tried.push(reset);
    }
    assert!(
        tried.contains(&MemoryReset::Madvise),
        "madvise is always there"
    );
}
