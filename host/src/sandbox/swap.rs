//! Whether this process's memory can be swapped out, which decides how the sandbox may
//! reset a memory between runs.
//!
//! The fast reset finds the pages a run wrote with Linux's PAGEMAP_SCAN and zeroes only
//! those. In the wasmtime this host is built with, that scan asks for pages that are
//! present, so a page the kernel swapped out while a run held it is neither zeroed nor
//! dropped, and the next instance in the slot, which may be another tenant's, reads it
//! back (a page pushed out to a swap file with `MADV_PAGEOUT` comes back holding the last
//! run's data; wasmtime fixed it in a release that needs a newer Rust). So the sandbox
//! resets with the scan only where nothing can be swapped out, and checks again while it
//! runs (see `Sandbox::new`).

use std::fs;
use std::path::{Path, PathBuf};

/// Whether pages of this process may be swapped out: a swap area is on (`/proc/swaps`)
/// and no cgroup v2 this process is in sets `memory.swap.max` to 0. If either cannot
/// be read, it says they may.
pub fn possible() -> bool {
    let Ok(swaps) = fs::read_to_string("/proc/swaps") else {
        return true;
    };
    if areas(&swaps) == 0 {
        return false;
    }
    let Some(cgroup) = fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| unified_path(&text).map(PathBuf::from))
    else {
        return true;
    };
    !cgroups_from(Path::new("/sys/fs/cgroup"), &cgroup)
        .iter()
        .any(|dir| {
            fs::read_to_string(dir.join("memory.swap.max")).is_ok_and(|max| max.trim() == "0")
        })
}

/// How many swap areas `/proc/swaps` lists: every line after its header.
fn areas(proc_swaps: &str) -> usize {
    proc_swaps
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .count()
}

/// The process's cgroup in the unified (v2) hierarchy, from `/proc/self/cgroup`: the
/// path of its `0::` line.
fn unified_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
}

/// The directories of `cgroup` and of each cgroup above it, under `root`. A limit set on
/// any of them applies to the process.
fn cgroups_from(root: &Path, cgroup: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = cgroup
        .ancestors()
        .map(|dir| root.join(dir.strip_prefix("/").unwrap_or(dir)))
        .collect();
    dirs.dedup();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_areas_are_the_lines_after_the_header() {
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert_eq!(areas(header), 0);
        assert_eq!(areas(""), 0);
        let one =
            format!("{header}/swapfile                               file\t\t524284\t\t0\t\t-2\n");
        assert_eq!(areas(&one), 1);
        let two = format!(
            "{one}/dev/zram0                              partition\t4194300\t\t0\t\t100\n"
        );
        assert_eq!(areas(&two), 2);
    }

    #[test]
    fn the_unified_cgroup_is_the_zero_line() {
        assert_eq!(
            unified_path("0::/system.slice/recur.service\n"),
            Some("/system.slice/recur.service")
        );
        let v1_and_v2 = "12:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n";
        assert_eq!(unified_path(v1_and_v2), Some("/docker/abc"));
        assert_eq!(unified_path("4:memory:/user.slice\n"), None);
    }

    #[test]
    fn a_limit_on_any_cgroup_above_counts() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            cgroups_from(root, Path::new("/a/b")),
            [root.join("a/b"), root.join("a"), root.to_path_buf()]
        );
        assert_eq!(cgroups_from(root, Path::new("/")), [root.to_path_buf()]);
    }
}
