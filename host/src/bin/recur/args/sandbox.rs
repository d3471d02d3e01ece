//! Flags about the sandbox that `recur host`, `recur bench` and `recur module deploy`
//! share: the compilation cache, the number of warm modules, the memory reset, and the
//! limits of a compile.

use std::path::PathBuf;

use std::time::Duration;

use recur_host::sandbox::{Compiler, MemoryReset, compile_cache_directory, max_warm_modules};

use super::parse_duration;

/// The limits of a compile, which runs in a child process: `recur host` and `recur
/// module deploy`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompileLimitArgs {
    /// Longest a component may take to compile. Each compile runs in a child process
    /// (this executable, as `recur compile-component`), stopped past this.
    #[arg(long, env = "RECUR_COMPILE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    compile_timeout: Duration,
    /// Most memory (address space) a compile may use, in MiB.
    #[arg(long, env = "RECUR_COMPILE_MEMORY_MIB", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(256..))]
    compile_memory_mib: u64,
}

impl CompileLimitArgs {
    /// Compiles in a child: this executable, run as `recur compile-component`, with the
    /// compilation cache `cache` if there is one.
    pub fn compiler(&self, cache: Option<PathBuf>) -> anyhow::Result<Compiler> {
        let program = std::env::current_exe().map_err(|e| {
            anyhow::anyhow!("cannot find this executable to compile modules with: {e}")
        })?;
        let mut args = vec!["compile-component".to_owned()];
        if let Some(dir) = cache {
            args.push("--compile-cache".into());
            args.push(dir.display().to_string());
        }
        Ok(Compiler {
            program,
            args,
            timeout: self.compile_timeout,
            max_memory_bytes: self.compile_memory_mib << 20,
        })
    }
}

/// How a host resets a memory between runs: `recur host` and `recur bench`.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum MemoryResetArg {
    /// Return a run's pages to the kernel with madvise (zeroing the first 2 MiB): every
    /// page is reset, whatever the kernel did with it meanwhile.
    #[default]
    Madvise,
    /// Zero the pages a run wrote, found with PAGEMAP_SCAN: faster, but a page the kernel
    /// is moving at that instant is missed; for hosts whose tenants trust each other.
    /// Refused where swap is on.
    PageScan,
    /// The page scan where nothing can be swapped out and the kernel has it (Linux 6.7+),
    /// madvise elsewhere.
    Auto,
}

impl MemoryResetArg {
    /// The sandbox's setting: `None` lets it choose.
    pub fn reset(self) -> Option<MemoryReset> {
        match self {
            MemoryResetArg::Auto => None,
            MemoryResetArg::PageScan => Some(MemoryReset::PageScan),
            MemoryResetArg::Madvise => Some(MemoryReset::Madvise),
        }
    }
}

/// Where a host keeps the modules it compiled: `recur host` and `recur bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompileCacheArgs {
    /// Keep compiled modules in this directory, so a restarted host (or another on this
    /// machine) loads them instead of compiling them again (default:
    /// $XDG_CACHE_HOME/recur/compiled, or ~/.cache/recur/compiled). Whoever can write it
    /// can run code in the host: it must be this user's and writable by no one else.
    #[arg(
        long,
        value_name = "DIR",
        env = "RECUR_COMPILE_CACHE",
        conflicts_with = "no_compile_cache"
    )]
    compile_cache: Option<PathBuf>,
    /// Compile every module the host meets; keep nothing on disk.
    #[arg(long, env = "RECUR_NO_COMPILE_CACHE")]
    no_compile_cache: bool,
}

impl CompileCacheArgs {
    /// The directory to use, if any. One given that cannot serve is refused when the
    /// host starts; the default one is only warned about: the host runs without it.
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_compile_cache {
            return None;
        }
        if let Some(dir) = &self.compile_cache {
            return Some(dir.clone());
        }
        let dir = default_compile_cache()?;
        match compile_cache_directory(&dir) {
            Ok(dir) => Some(dir),
            Err(err) => {
                tracing::warn!("{err}; running without a compilation cache");
                None
            }
        }
    }
}

/// `$XDG_CACHE_HOME/recur/compiled`, or `~/.cache/recur/compiled`; none without either.
fn default_compile_cache() -> Option<PathBuf> {
    let home = |var| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = home("XDG_CACHE_HOME").or_else(|| home("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("recur").join("compiled"))
}

/// Parses `--warm-modules`: a count up to what this machine's pool can hold.
pub fn warm_modules(text: &str) -> Result<u32, String> {
    let max = max_warm_modules();
    match text.parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!(
            "expected a number of modules from 0 to {max} (each costs 4 GiB of address space per CPU), not `{text}`"
        )),
    }
}
