//! Allocates memory in 1 MiB chunks, writing to each and keeping all of them, until the
//! host's memory limit makes an allocation fail (which aborts the run).
use recur_guest::{Error, Handler, Outcome, Task};

const CHUNK: usize = 1 << 20;

struct MemoryBomb;

impl Handler for MemoryBomb {
    fn run(_task: Task) -> Result<Outcome, Error> {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        loop {
            // Filled with ones rather than zeros: a zeroed allocation may be satisfied by
            // fresh pages without a single write.
            chunks.push(vec![1; CHUNK]);
            std::hint::black_box(&chunks);
        }
    }
}

recur_guest::export!(MemoryBomb);
