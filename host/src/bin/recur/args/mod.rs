//! Flags and values that more than one subcommand parses: the kind of claim, durations
//! and times, and the sandbox's compilation cache and warm modules.

mod claim;
mod sandbox;
mod time;

pub use claim::ClaimArg;
pub use sandbox::{CompileCacheArgs, CompileLimitArgs, MemoryResetArg, warm_modules};
pub use time::{parse_at, parse_duration};
