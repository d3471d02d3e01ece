//! Builds the task modules in `modules/` as components, for the host's tests and for the
//! examples embedded in the `recur` binary.
//!
//! It runs one `cargo build --release` of the `modules/` workspace for wasm32-wasip2, in a
//! target directory of its own (`<target>/wasm-modules`) that debug and release builds of
//! the host share, then one for wasm32-unknown-unknown of the modules whose manifest asks
//! for it (`[package.metadata.recur] target = "wasm32-unknown-unknown"`: components
//! without WASI, linked by `wasm-component-ld`; see the guest SDK's docs), then writes
//! `$OUT_DIR/modules.rs`: one `pub const <NAME>_COMPONENT: &str` per module with the
//! absolute path of its `.wasm`, and `ALL_COMPONENTS`. The modules are found by
//! reading `modules/`, so a new one needs no change here. The examples listed in
//! [`EMBEDDED`] are also copied to `$OUT_DIR/<name>.wasm`, where `src/examples.rs`
//! includes them.

use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target modules are built for unless they ask otherwise; it emits components
/// directly.
const TARGET: &str = "wasm32-wasip2";
/// The target of modules without WASI; `wasm-component-ld` (shipped with the toolchain)
/// links them into components.
const LEAN_TARGET: &str = "wasm32-unknown-unknown";

/// The modules that `src/examples.rs` embeds in the binary.
const EMBEDDED: &[&str] = &["noop", "counter", "crawler"];

/// Variables of the outer build that must not reach the inner one: they carry flags,
/// wrappers (clippy's driver, sccache), a target or a jobserver meant for the host crate.
/// `CARGO_TARGET_DIR` is replaced by our own. Every `CARGO_PROFILE_*` and `CARGO_CFG_*`
/// is removed as well (see [`leaks`]).
const LEAKING: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CLIPPY_ARGS",
    "CARGO_MAKEFLAGS",
    "CARGO_TARGET_DIR",
];

/// One crate in `modules/`.
struct Module {
    /// The package name, as in its Cargo.toml.
    name: String,
    /// Its directory, `modules/<dir>`.
    dir: PathBuf,
    /// [`TARGET`] or [`LEAN_TARGET`].
    target: &'static str,
}

impl Module {
    /// The name of the generated constant: `memory-bomb` becomes `MEMORY_BOMB_COMPONENT`.
    fn const_name(&self) -> String {
        format!("{}_COMPONENT", self.name.to_uppercase().replace('-', "_"))
    }

    /// The component cargo writes: the crate name, with dashes turned into underscores,
    /// under the module's target.
    fn component(&self, target_dir: &Path) -> PathBuf {
        let file = format!("{}.wasm", self.name.replace('-', "_"));
        target_dir.join(self.target).join("release").join(file)
    }
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ sits in the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let modules_dir = root.join("modules");
    let target_dir = target_dir(&root);

    let modules = discover(&modules_dir);
    watch(&root, &modules);
    build(&modules_dir, &target_dir, TARGET, &[]);
    let lean: Vec<&str> = modules
        .iter()
        .filter(|m| m.target == LEAN_TARGET)
        .map(|m| m.name.as_str())
        .collect();
    if !lean.is_empty() {
        build(&modules_dir, &target_dir, LEAN_TARGET, &lean);
    }

    write_if_changed(
        &out_dir.join("modules.rs"),
        consts(&modules, &target_dir).as_bytes(),
    );
    for name in EMBEDDED {
        let module = modules
            .iter()
            .find(|m| m.name == *name)
            .unwrap_or_else(|| panic!("the embedded example `{name}` is not in modules/"));
        let bytes = fs::read(module.component(&target_dir)).expect("checked by consts");
        write_if_changed(&out_dir.join(format!("{name}.wasm")), &bytes);
    }
}

/// `$CARGO_TARGET_DIR/wasm-modules` when the outer build sets it, else
/// `<root>/target/wasm-modules`. Not the profile's own directory: the modules are always
/// built in release, and debug and release builds of the host can then share them.
fn target_dir(root: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    // A relative CARGO_TARGET_DIR is relative to where cargo was started, which a build
    // script cannot know; the workspace root is by far the likeliest.
    let base =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    base.join("wasm-modules")
}

/// Every subdirectory of `modules/` with a Cargo.toml, sorted by package name.
fn discover(modules_dir: &Path) -> Vec<Module> {
    let entries = fs::read_dir(modules_dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", modules_dir.display()));
    let mut modules: Vec<Module> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .map(|dir| {
            let (name, target) = manifest(&dir.join("Cargo.toml"));
            Module { name, dir, target }
        })
        .collect();
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        !modules.is_empty(),
        "no module crates in {}",
        modules_dir.display()
    );
    modules
}

/// Reads the package's name from the `[package]` table and its target from
/// `[package.metadata.recur]` ([`TARGET`] if it names none). A line scan rather than a
/// TOML parser, which would be this script's only dependency; module manifests are short
/// and plain.
fn manifest(path: &Path) -> (String, &'static str) {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (mut name, mut target, mut table) = (None, TARGET, "");
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            table = line;
        } else if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().trim_matches('"');
            match (table, key.trim()) {
                ("[package]", "name") => name = Some(value.to_owned()),
                ("[package.metadata.recur]", "target") => {
                    target = [TARGET, LEAN_TARGET]
                        .into_iter()
                        .find(|t| *t == value)
                        .unwrap_or_else(|| {
                            panic!(
                                "{}: target {value:?} is not one modules are built for; use {TARGET:?} or {LEAN_TARGET:?}",
                                path.display()
                            )
                        });
                }
                _ => {}
            }
        }
    }
    let name = name.unwrap_or_else(|| panic!("{} has no [package] name", path.display()));
    (name, target)
}

/// Asks cargo to rerun this script only when an input of the modules changes. Directories
/// are scanned recursively, which is why `modules/` itself is not listed (its `target/`
/// would change on every build); a new module must be added to `modules/Cargo.toml`'s
/// members, which is watched.
///
/// The paths are given relative to `host/`, as cargo resolves them against the package
/// it builds. Cargo names a workspace's units the same in every clone, so clones that
/// share a target directory (CI's cache does) share this script's fingerprint too: with
/// absolute paths, a clone would watch the files of whichever clone ran the script last,
/// and go on testing the modules built from that clone's sources.
fn watch(root: &Path, modules: &[Module]) {
    let mut paths = vec![
        root.join("Cargo.toml"),
        root.join("rust-toolchain.toml"),
        root.join("wit"),
        // sqlx::migrate! embeds the migrations; a new or changed one must rebuild the host.
        root.join("migrations"),
        root.join("guest-sdk/Cargo.toml"),
        root.join("guest-sdk/src"),
        root.join("modules/Cargo.toml"),
        root.join("modules/Cargo.lock"),
    ];
    for module in modules {
        paths.push(module.dir.join("Cargo.toml"));
        paths.push(module.dir.join("src"));
        // Only if present: cargo reruns a script on every build while a watched path is
        // missing.
        let script = module.dir.join("build.rs");
        if script.exists() {
            paths.push(script);
        }
    }
    for path in paths {
        let inside = path
            .strip_prefix(root)
            .expect("every watched path is in the workspace");
        println!(
            "cargo:rerun-if-changed={}",
            Path::new("..").join(inside).display()
        );
    }
}

/// Runs `cargo build --release --target <target>` on the modules workspace (`packages`
/// only, unless empty), and panics with cargo's output if it fails.
///
/// rustup installs the targets rust-toolchain.toml lists only when it installs the
/// toolchain itself; on a machine that already had the pinned toolchain they are missing,
/// and the first build would fail. So a build that fails for want of the target adds it
/// with rustup, as the toolchain file asks, and runs once more.
fn build(modules_dir: &Path, target_dir: &Path, target: &str, packages: &[&str]) {
    let mut output = modules_cargo(modules_dir, target_dir, target, packages);
    if !output.status.success() && target_missing(&output.stderr) && add_target(modules_dir, target)
    {
        println!(
            "cargo:warning=added the {target} target with rustup (rust-toolchain.toml lists it)"
        );
        output = modules_cargo(modules_dir, target_dir, target, packages);
    }
    if output.status.success() {
        return;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let hint = if target_missing(&output.stderr) {
        format!(
            "\nThe {target} target is missing: run `rustup target add {target}` (rust-toolchain.toml lists it)."
        )
    } else {
        String::new()
    };
    panic!(
        "building the task modules in {} for {target} failed ({}):\n{stderr}{hint}",
        modules_dir.display(),
        output.status
    );
}

/// Whether cargo's output says the target's standard library is not installed.
fn target_missing(stderr: &[u8]) -> bool {
    let stderr = String::from_utf8_lossy(stderr);
    stderr.contains("may not be installed") || stderr.contains("can't find crate for `core`")
}

/// `rustup target add <target>` for the toolchain rust-toolchain.toml pins (rustup reads
/// it from `modules_dir`); false when rustup is not there or fails.
fn add_target(modules_dir: &Path, target: &str) -> bool {
    Command::new("rustup")
        .args(["target", "add", target])
        .current_dir(modules_dir)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// One `cargo build` of the modules workspace for `target`, with its output.
fn modules_cargo(
    modules_dir: &Path,
    target_dir: &Path,
    target: &str,
    packages: &[&str],
) -> std::process::Output {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--target", target, "--manifest-path"])
        .arg(modules_dir.join("Cargo.toml"))
        // From here rustup finds the workspace's rust-toolchain.toml.
        .current_dir(modules_dir);
    for package in packages {
        command.args(["--package", package]);
    }
    for (key, _) in env::vars_os() {
        if leaks(&key) {
            command.env_remove(&key);
        }
    }
    command.env("CARGO_TARGET_DIR", target_dir);
    // rustc finds the linker in the toolchain's own bin directory.
    command.env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER",
        "wasm-component-ld",
    );

    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the task modules: {e}"))
}

/// Whether an environment variable belongs to the outer build and must not reach the
/// inner one (see [`LEAKING`]).
fn leaks(key: &OsString) -> bool {
    let Some(key) = key.to_str() else {
        return false;
    };
    LEAKING.contains(&key) || key.starts_with("CARGO_PROFILE_") || key.starts_with("CARGO_CFG_")
}

/// The text of `modules.rs`. Panics if a module's component is missing, which happens when
/// its crate is not a member of the modules workspace or is not a `cdylib`.
fn consts(modules: &[Module], target_dir: &Path) -> String {
    let mut text = String::from("// Generated by host/build.rs from the crates in modules/.\n");
    for module in modules {
        let path = module.component(target_dir);
        assert!(
            path.is_file(),
            "{} was not built: is {} a member of modules/Cargo.toml, with crate-type = [\"cdylib\"]?",
            path.display(),
            module.dir.display()
        );
        let path = path.to_str().expect("the target directory's path is UTF-8");
        writeln!(
            text,
            "\n/// The component built from `modules/{}`.",
            module.name
        )
        .unwrap();
        writeln!(text, "pub const {}: &str = {path:?};", module.const_name()).unwrap();
    }
    text.push_str("\n/// Every module, as (crate name, component path), sorted by name.\n");
    text.push_str("pub const ALL_COMPONENTS: &[(&str, &str)] = &[\n");
    for module in modules {
        writeln!(text, "    ({:?}, {}),", module.name, module.const_name()).unwrap();
    }
    text.push_str("];\n");
    text
}

/// Writes `bytes` unless the file already holds them, so that an unchanged output does not
/// make cargo recompile the host crate.
fn write_if_changed(path: &Path, bytes: &[u8]) {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
