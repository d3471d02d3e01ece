//! The `recur` command: an application of the `recur_host` library. The subcommands are
//! in `cli`; `bench`, `demo` and `throwaway` (a throwaway database) are what `recur bench`
//! and `recur demo` run; `args` holds the flags more than one subcommand parses.

mod args;
mod bench;
mod cli;
mod demo;
mod throwaway;

fn main() -> std::process::ExitCode {
    cli::main()
}
