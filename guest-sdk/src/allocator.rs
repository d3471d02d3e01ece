//! The allocator of a module built for `wasm32-unknown-unknown` (the `allocator` feature,
//! on by default; see the crate docs, *A module without WASI*).
//!
//! Rust's own allocator on that target takes memory only by growing the linear memory,
//! so every fresh instance grows its memory on its first allocation, however little it
//! allocates, and growing a memory is work for the host. This allocator is the same
//! dlmalloc, given first an arena that is part of the initial memory (zeroed `.bss`,
//! which costs nothing until touched) and only then grown memory: a run that allocates
//! less than the arena never grows its memory.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use dlmalloc::Dlmalloc;

/// The arena: what an instance can allocate before its memory grows at all. It is part
/// of every instance's initial memory, so it is sized for the payloads, states and
/// outcomes of a typical run, not for the largest: a run that needs more grows the
/// memory, as it would without the arena.
const ARENA_BYTES: usize = 256 << 10;
/// A WebAssembly page.
const PAGE: usize = 64 << 10;

#[repr(align(16))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

// SAFETY: handed out once, to the one allocator below.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));

/// Where dlmalloc gets its memory: the arena first, then pages by `memory.grow`.
struct Memory {
    arena_taken: AtomicBool,
}

// SAFETY: regions are handed out once and never returned (`free` says so), as
// dlmalloc's own wasm system allocator does.
unsafe impl dlmalloc::Allocator for Memory {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        if size <= ARENA_BYTES && !self.arena_taken.swap(true, Ordering::Relaxed) {
            return (ARENA.0.get().cast(), ARENA_BYTES, 0);
        }
        let pages = size.div_ceil(PAGE);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return (ptr::null_mut(), 0, 0);
        }
        ((previous * PAGE) as *mut u8, pages * PAGE, 0)
    }

    fn remap(&self, _ptr: *mut u8, _old: usize, _new: usize, _can_move: bool) -> *mut u8 {
        ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _old: usize, _new: usize) -> bool {
        false
    }

    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        // The arena is zeroed .bss of a fresh instance, grown pages are zeroed by wasm.
        true
    }

    fn page_size(&self) -> usize {
        PAGE
    }
}

/// dlmalloc behind the global allocator interface.
struct Global(UnsafeCell<Dlmalloc<Memory>>);

// SAFETY: a component instance runs on one thread (this target has no threads).
unsafe impl Sync for Global {}

// SAFETY: each call forwards to dlmalloc, which upholds GlobalAlloc's contract given the
// same layouts back, as GlobalAlloc's callers guarantee.
unsafe impl GlobalAlloc for Global {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).malloc(layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).calloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { (*self.0.get()).free(ptr, layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { (*self.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Global = Global(UnsafeCell::new(Dlmalloc::new_with_allocator(Memory {
    arena_taken: AtomicBool::new(false),
})));
