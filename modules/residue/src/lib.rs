//! Looks for what a run leaves in its memory slot for the next instance. The payload
//! `{"mode": M, "key": K, "bytes": N}` with K from 1 to 255:
//! - `write`: fills N bytes of heap (default 8 MiB) with a 64-byte marker, over and over,
//!   and completes;
//! - `scan`: grows its memory to at least N bytes (default 16 MiB), so that it covers
//!   what a writer before it used, reads all of it, and completes with the state
//!   `{"hits": H, "scanned": S}`: H places where two markers follow each other, in the S
//!   bytes it read.
//!
//! The marker is `PATTERN` with each byte XORed with K. The scan XORs the memory it
//! reads instead, so the marker itself is never in the scanner's memory; and it looks
//! for two markers in a row, which no copy of one marker in a register spill can make.
use recur_guest::{Error, Handler, Outcome, Task};

const MARKER_BYTES: usize = 64;
/// The marker before its XOR with the key: arbitrary, and nothing a module would hold.
const PATTERN: [u8; MARKER_BYTES] = *b"recur residue marker: if you can read this, a slot leaked. 0xA5!";

/// What a scan found.
#[derive(serde::Serialize)]
struct Found {
    hits: u64,
    scanned: usize,
}

#[derive(serde::Deserialize)]
struct Payload {
    mode: String,
    key: u8,
    bytes: Option<usize>,
}

struct Residue;

impl Handler for Residue {
    fn run(task: Task) -> Result<Outcome, Error> {
        let payload = task.payload_json::<Payload>()?;
        if payload.key == 0 {
            return Ok(recur_guest::fail("the key must be 1 to 255"));
        }
        match payload.mode.as_str() {
            "write" => {
                write(payload.key, payload.bytes.unwrap_or(8 << 20));
                Ok(recur_guest::complete())
            }
            "scan" => {
                let found = scan(payload.key, payload.bytes.unwrap_or(16 << 20));
                Ok(recur_guest::complete().with_state_json(&found)?)
            }
            other => Ok(recur_guest::fail(format!("unknown mode {other:?}"))),
        }
    }
}

/// Fills `bytes` of fresh heap with the marker, and keeps the compiler from dropping it.
fn write(key: u8, bytes: usize) {
    let marker = PATTERN.map(|b| b ^ key);
    let mut buf = vec![0_u8; bytes];
    for chunk in buf.chunks_mut(MARKER_BYTES) {
        chunk.copy_from_slice(&marker[..chunk.len()]);
    }
    std::hint::black_box(&buf);
}

/// Grows the linear memory to at least `bytes`, then counts the places in all of it
/// where two markers follow each other.
fn scan(key: u8, bytes: usize) -> Found {
    let pages = core::arch::wasm32::memory_size::<0>();
    let wanted = bytes.div_ceil(65536);
    if wanted > pages {
        // Pages the allocator does not know of: only read, never handed out.
        core::arch::wasm32::memory_grow::<0>(wanted - pages);
    }
    let size = core::arch::wasm32::memory_size::<0>() * 65536;
    // Address 0 is left out: in Rust, reading through a null pointer is undefined even
    // where WebAssembly allows it, and no allocation starts there.
    let start = MARKER_BYTES;
    let mut hits = 0;
    let mut at = start;
    while at + 2 * MARKER_BYTES <= size {
        if (0..2 * MARKER_BYTES).all(|j| {
            // SAFETY: `at + j` is inside the linear memory, which is all readable.
            let byte = unsafe { std::ptr::read_volatile((at + j) as *const u8) };
            byte ^ key == PATTERN[j % MARKER_BYTES]
        }) {
            hits += 1;
        }
        at += 1;
    }
    Found {
        hits,
        scanned: size - start,
    }
}

recur_guest::export!(Residue);
