//! The compilation cache: native code of the components a host compiled, kept in a
//! directory on the host's own disk by wasmtime's cache (`wasmtime::Cache`), so a host
//! that restarts, or a second host on the same machine, loads a module in milliseconds
//! instead of compiling it again. wasmtime keys each entry by a hash of the component's
//! bytes, the engine's settings and wasmtime's version, writes entries atomically, and
//! trims the directory to its size limits in a background thread.
//!
//! What is in the directory is loaded as machine code and run without further checks:
//! whoever can write it can run code in every host that uses it. So the directory is
//! created private to the host's user, and one that other users may write is refused.
//! For the same reason compiled code is never shared through PostgreSQL: write access
//! to the database would then be code execution on every host.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::{Cache, CacheConfig};

/// Why a compilation cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// It could not be created or read.
    #[error("cannot use {} as the compilation cache: {source}", .path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What the filesystem said.
        source: io::Error,
    },
    /// It exists and is not a directory.
    #[error("cannot use {} as the compilation cache: it is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// Another user owns it, or other users may write it.
    #[error(
        "the compilation cache {} is another user's or writable by others, who could put code in it that hosts would run; pick a directory of this user's that only it may write (`chmod go-w`)",
        .0.display()
    )]
    Shared(PathBuf),
    /// wasmtime refused its settings.
    #[error("cannot start the compilation cache in {}: {message}", .path.display())]
    Wasmtime {
        /// The directory.
        path: PathBuf,
        /// wasmtime's error, on one line.
        message: String,
    },
}

/// Opens the cache in `dir` (see [`directory`]).
pub fn open(dir: &Path) -> Result<Cache, CacheError> {
    let dir = directory(dir)?;
    let mut config = CacheConfig::new();
    config.with_directory(&dir);
    Cache::new(config).map_err(|err| CacheError::Wasmtime {
        path: dir,
        message: super::one_line(&err),
    })
}

/// Checks that `dir` may hold a compilation cache, creating it (private to this user)
/// if it is missing, and returns it as an absolute path.
pub fn directory(dir: &Path) -> Result<PathBuf, CacheError> {
    let io = |source| CacheError::Io {
        path: dir.to_owned(),
        source,
    };
    let dir = std::path::absolute(dir).map_err(io)?;
    if dir.exists() && !dir.is_dir() {
        return Err(CacheError::NotADirectory(dir));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io)?;
    let meta = std::fs::metadata(&dir).map_err(io)?;
    // Another user's directory, or one group or others may write: either lets someone
    // else choose the code hosts run. (A sticky directory such as /tmp is refused too:
    // anyone may create the subdirectories wasmtime would write into.)
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me || meta.permissions().mode() & 0o022 != 0 {
        return Err(CacheError::Shared(dir));
    }
    Ok(dir)
}
