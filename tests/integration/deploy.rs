//! Deploy validates before it stores: a refused component leaves no trace.

use recur_host::examples::artifacts::{NOOP_COMPONENT, WRONG_WORLD_COMPONENT};
use recur_host::registry::{self, DeployError};
use recur_host::sandbox::{Sandbox, SandboxConfig, ValidationError};

use crate::support::TestDb;

async fn deploy(db: &TestDb, bytes: &[u8]) -> Result<registry::Deployed, DeployError> {
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrent_runs: 1,
        ..SandboxConfig::default()
    })
    .unwrap();
    registry::deploy(&db.pool, &sandbox, "default", "thing", bytes).await
}

#[tokio::test]
async fn deploy_refuses_what_is_not_a_task_component_and_stores_nothing() {
    let db = TestDb::new().await;
    let core_module = b"\0asm\x01\0\0\0";
    let cases: [(&[u8], &str); 4] = [
        (b"", "a component must be 1 byte"),
        (b"#!/bin/sh\necho hello\n", "not WebAssembly"),
        (core_module, "core WebAssembly module, not a component"),
        (
            &std::fs::read(WRONG_WORLD_COMPONENT).unwrap(),
            "does not export the recur:task/task-module@0.1.0 world",
        ),
    ];
    for (bytes, expected) in cases {
        let err = deploy(&db, bytes).await.unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
    let truncated = std::fs::read(NOOP_COMPONENT).unwrap();
    let err = deploy(&db, &truncated[..truncated.len() / 2])
        .await
        .unwrap_err();
    assert!(
        matches!(err, DeployError::Invalid(ValidationError::Invalid(_))),
        "{err}"
    );
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM modules").await, 0);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM tenants").await, 0);
}

#[tokio::test]
async fn redeploying_makes_a_new_active_version_and_the_same_bytes_change_nothing() {
    let db = TestDb::new().await;
    let noop = std::fs::read(NOOP_COMPONENT).unwrap();
    let first = deploy(&db, &noop).await.unwrap();
    assert_eq!((first.version, first.unchanged), (1, false));
    let again = deploy(&db, &noop).await.unwrap();
    assert_eq!((again.version, again.unchanged), (1, true));
    let counter = std::fs::read(recur_host::examples::artifacts::COUNTER_COMPONENT).unwrap();
    let second = deploy(&db, &counter).await.unwrap();
    assert_eq!((second.version, second.unchanged), (2, false));
    let listed = registry::list(&db.pool).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].version, listed[0].sha256.clone()),
        (2, second.sha256)
    );
}
