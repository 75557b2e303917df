//! `hostile-oversized` (scoring-rule): answers with far too much data, while
//! staying inside the default 64 MiB memory limit:
//!
//! - `score`: value 1.0 and an explanation of 8 MiB (`'x'` × 8 388 608);
//! - `score-batch`: that same oversized score for every input;
//! - `fit-chunk`: accepts every chunk (a unit result cannot be oversized);
//! - `fit-finish`: a valid JSON string literal of 8 MiB (`"xxx…"`), after any
//!   number of chunks, zero included.
//!
//! The host must refuse the output (output-size cap) with a plugin error
//! rather than store or forward it.
//!
//! Capabilities imported: none.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::types::{Json, PluginError, Timestamp};

/// 8 MiB: more than any sane output cap, less than the memory limit.
const OVERSIZED_BYTES: usize = 8 * 1024 * 1024;

struct HostileOversized;

fn oversized_score() -> CustomerScore {
    CustomerScore {
        value: 1.0,
        label: None,
        segment: None,
        explanation: "x".repeat(OVERSIZED_BYTES),
        components: Vec::new(),
    }
}

impl Guest for HostileOversized {
    fn score(_input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        Ok(oversized_score())
    }

    fn score_batch(inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        inputs.iter().map(|_| Ok(oversized_score())).collect()
    }

    fn fit_chunk(_chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        Ok(())
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        Ok(format!("\"{}\"", "x".repeat(OVERSIZED_BYTES)))
    }
}

export!(HostileOversized);
