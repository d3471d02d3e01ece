//! Links noop with a 64 KiB stack instead of Rust's 1 MiB: every fresh instance starts
//! with the module's whole initial memory, most of which is the stack, and noop's JSON
//! payload needs little of it (see the guest SDK's docs, "A smaller stack").
fn main() {
    // Only when linking WebAssembly: a native build's linker does not know the flag.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=-zstack-size=65536");
    }
}
