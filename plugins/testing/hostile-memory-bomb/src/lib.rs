//! `hostile-memory-bomb` (scoring-rule): `score`, `score-batch`, `fit-chunk`
//! and `fit-finish` (so a fit blows up in its first chunk, or in `fit-finish`
//! when there is no chunk at all) allocate 1 MiB chunks, fill each with a
//! non-zero byte (so every page is really touched, not just reserved) and
//! keep them all, until allocation fails. Rust then aborts ("memory
//! allocation of 1048576 bytes failed" on stderr, then a wasm `unreachable`
//! trap). The host's memory limit
//! (`memory.grow` refused past it) must stop it well before the machine
//! suffers; the call fails as a trap / resource error.
//!
//! Capabilities imported: none.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

use core::hint::black_box;
use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::types::{Json, PluginError, Timestamp};

const CHUNK: usize = 1 << 20;

struct HostileMemoryBomb;

fn hoard() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        // vec![0xA5; n] writes every byte; a zeroed vec could stay untouched.
        chunks.push(black_box(vec![0xA5_u8; CHUNK]));
        black_box(&mut chunks);
    }
}

impl Guest for HostileMemoryBomb {
    fn score(_input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        hoard()
    }

    fn score_batch(_inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        hoard()
    }

    fn fit_chunk(_chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        hoard()
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        hoard()
    }
}

export!(HostileMemoryBomb);
