//! The `--claim` flag: which kind of claim a host takes, as the command line names it.

use recur_host::ClaimMode;

/// Which kind of claim a host takes (see `recur host --help`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClaimArg {
    /// Locked claims while runs are short, timed leases otherwise.
    #[default]
    Auto,
    /// Always a timed lease.
    Timed,
    /// Always a locked claim.
    Locked,
}

impl From<ClaimArg> for ClaimMode {
    fn from(arg: ClaimArg) -> ClaimMode {
        match arg {
            ClaimArg::Auto => ClaimMode::Auto,
            ClaimArg::Timed => ClaimMode::Timed,
            ClaimArg::Locked => ClaimMode::Locked,
        }
    }
}
