//! `hostile-panic` (scoring-rule): `score`, `score-batch`, `fit-chunk` and
//! `fit-finish` panic with the message `"hostile plugin panicked on
//! purpose"` (so a fit traps in its first chunk, or in `fit-finish` when
//! there is no chunk at all). On
//! wasm32-wasip2 a panic prints `panicked at ...: hostile plugin panicked on
//! purpose` to stderr (WASI `wasi:cli/stderr`) and aborts with a wasm
//! `unreachable` trap. The host must turn the trap into a plugin error (not
//! a 500, not a crash), and must not reuse the trapped instance.
//!
//! Capabilities imported: none.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::types::{Json, PluginError, Timestamp};

/// The exact panic message; tests may look for it in captured stderr.
const MESSAGE: &str = "hostile plugin panicked on purpose";

struct HostilePanic;

impl Guest for HostilePanic {
    fn score(_input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        panic!("{MESSAGE}")
    }

    fn score_batch(_inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        panic!("{MESSAGE}")
    }

    fn fit_chunk(_chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        panic!("{MESSAGE}")
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        panic!("{MESSAGE}")
    }
}

export!(HostilePanic);
