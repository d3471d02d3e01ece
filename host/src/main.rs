//! The `recur` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    recur_host::cli::main()
}
