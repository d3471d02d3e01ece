//! Deploy validates before it stores: a refused component leaves no trace. Instance
//! reuse is chosen per deployed version and shown by `recur module list`.

use recur_host::deploy::{self, DeployError, DeployOptions};
use recur_host::examples::artifacts::{NOOP_COMPONENT, WRONG_WORLD_COMPONENT};
use recur_host::sandbox::{Sandbox, SandboxConfig, ValidationError};

use crate::support::{self, TestDb};

async fn deploy(db: &TestDb, bytes: &[u8]) -> Result<deploy::Deployed, DeployError> {
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrent_runs: 1,
        ..SandboxConfig::default()
    })
    .unwrap();
    deploy::deploy(&db.pool, &sandbox, "default", "thing", bytes).await
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
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tenants WHERE name <> 'default'")
            .await,
        0
    );
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
    let listed = deploy::list(&db.pool).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].version, listed[0].sha256.clone()),
        (2, second.sha256)
    );
}

#[tokio::test]
async fn reuse_is_a_setting_of_the_deployed_version() {
    let db = TestDb::new().await;
    let noop = std::fs::read(NOOP_COMPONENT).unwrap();
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrent_runs: 1,
        ..SandboxConfig::default()
    })
    .unwrap();
    let deploy = |reuse_instance| {
        let options = DeployOptions { reuse_instance };
        deploy::deploy_with(&db.pool, &sandbox, "default", "thing", &noop, options)
    };
    let fresh = deploy(false).await.unwrap();
    assert_eq!((fresh.version, fresh.reuse_instance), (1, false));
    // The same component with reuse on is a new version: that is how hosts notice.
    let reused = deploy(true).await.unwrap();
    assert_eq!(
        (reused.version, reused.unchanged, reused.reuse_instance),
        (2, false, true)
    );
    assert!(deploy(true).await.unwrap().unchanged);
    assert!(deploy::list(&db.pool).await.unwrap()[0].reuse_instance);
    assert_eq!(deploy(false).await.unwrap().version, 3);
}

#[tokio::test]
async fn module_list_shows_whether_instances_are_reused() {
    let db = TestDb::new().await;
    let recur = |args: &[&str]| {
        let output = support::recur(&db.url, args, b"");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let deployed = recur(&[
        "module",
        "deploy",
        "noop",
        NOOP_COMPONENT,
        "--reuse-instance",
    ]);
    assert!(deployed.contains("reusing instances"), "{deployed}");
    recur(&["module", "deploy", "other", NOOP_COMPONENT]);
    let listed = recur(&["module", "list"]);
    let line = |task_type: &str| {
        listed
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(task_type))
            .unwrap_or_else(|| panic!("{task_type} not in {listed}"))
            .to_owned()
    };
    assert!(line("noop").contains(" reused "), "{listed}");
    assert!(line("other").contains(" fresh "), "{listed}");
    let json = recur(&["module", "list", "--json"]);
    assert!(json.contains(r#""reuse_instance":true"#), "{json}");
}

/// A component holding more core instances or memories than the pool keeps for one run
/// could take the slots other tenants' runs need: it is refused at deploy, with the
/// limit it broke, and nothing is stored. (A core module may hold one memory and one
/// table, so the cap on core instances bounds its tables too.)
#[tokio::test]
async fn a_component_over_the_pools_per_component_limits_is_refused() {
    let db = TestDb::new().await;
    let repeat = |n: usize, item: &str| item.repeat(n);
    let cases = [
        (
            format!(
                "(component (core module $m) {})",
                repeat(17, "(core instance (instantiate $m))")
            ),
            "17 core module instances, which exceeds the configured maximum of 16",
        ),
        (
            format!(
                "(component (core module $m (memory 1)) {})",
                repeat(5, "(core instance (instantiate $m))")
            ),
            "5 Wasm linear memories, which exceeds the configured maximum of 4",
        ),
        (
            "(component (core module $m (memory 1) (memory 1)) (core instance (instantiate $m)))"
                .to_owned(),
            "defined memories count of 2 exceeds the per-instance limit of 1",
        ),
    ];
    for (text, expected) in cases {
        let bytes = wat::parse_str(&text).unwrap();
        let err = deploy(&db, &bytes).await.unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
    let stored: i64 = db.scalar("SELECT count(*) FROM modules").await;
    assert_eq!(stored, 0);
}
