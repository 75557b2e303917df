//! `hostile-loop` (scoring-rule): `score`, `score-batch`, `fit-chunk` and
//! `fit-finish` all spin forever in a loop the optimiser cannot remove
//! (`core::hint::black_box`). A fit therefore hangs in its first chunk, or in
//! `fit-finish` when the population is empty (no chunk at all).
//! No host call, no allocation: only the host's CPU budget (epoch deadline
//! or fuel) can stop it. The host must interrupt the call, report a timeout
//! / budget error, and stay responsive; other plugins and tenants must be
//! unaffected.
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

struct HostileLoop;

fn spin() -> ! {
    let mut turns: u64 = 0;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

impl Guest for HostileLoop {
    fn score(_input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        spin()
    }

    fn score_batch(_inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        spin()
    }

    fn fit_chunk(_chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        spin()
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        spin()
    }
}

export!(HostileLoop);
