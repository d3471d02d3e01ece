//! Links noop with a 64 KiB stack instead of Rust's 1 MiB: the host scans a fresh
//! instance's whole memory for written pages after every run, and noop's JSON payload
//! needs a few hundred bytes of stack (see the guest SDK's docs, "A smaller stack").
fn main() {
    // Only when linking WebAssembly: a native build's linker does not know the flag.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=-zstack-size=65536");
    }
}
