//! `hostile-recursion` (scoring-rule): `score`, `score-batch`, `fit-chunk`
//! and `fit-finish` recurse without bound (so a fit overflows in its first
//! chunk, or in `fit-finish` when there is no chunk at all). The recursion
//! is not a tail call (the result is combined after the call returns) and
//! goes through `black_box`, so the optimiser can turn it neither into a
//! loop nor into nothing. It ends in a
//! wasm stack-overflow trap (wasmtime's `max_wasm_stack`) or, if the
//! shadow stack in linear memory runs out first, an out-of-bounds trap.
//! Either way the host must report a trap and keep running (no native
//! stack overflow of the host process).
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

struct HostileRecursion;

#[inline(never)]
fn dive(depth: u64) -> u64 {
    // Opaque exit the optimiser cannot prove unreachable (it never fires).
    if black_box(depth) == u64::MAX {
        return depth;
    }
    let below = dive(black_box(depth.wrapping_add(1)));
    black_box(below).wrapping_mul(31).wrapping_add(depth)
}

fn overflow() -> f64 {
    dive(black_box(0)) as f64
}

impl Guest for HostileRecursion {
    fn score(_input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        let value = overflow();
        Ok(CustomerScore {
            value,
            label: None,
            segment: None,
            explanation: "unreachable: the recursion never returns".to_string(),
            components: Vec::new(),
        })
    }

    fn score_batch(inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        inputs.into_iter().map(Self::score).collect()
    }

    fn fit_chunk(_chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        // Unreachable past the call: `overflow` never returns.
        black_box(overflow());
        Ok(())
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        Ok(format!("{{\"depth\":{}}}", overflow()))
    }
}

export!(HostileRecursion);
