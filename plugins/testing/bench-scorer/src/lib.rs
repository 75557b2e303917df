//! `bench-scorer`: the benchmark plugin (scoring-rule world). Pure compute:
//! it imports no Rapport capability and makes no host call, so a benchmark
//! measures the runtime's per-call overhead (instantiation, lifting and
//! lowering the history) plus a trivial loop.
//!
//! value = Σ over history entries of `amount.minor` (0 when absent) × 0.01 +
//! number of entries; see `model.rs`, which the native twin of the benchmark
//! includes as-is. Only the entries' amounts are read: no `strings` lookup,
//! so no index can be out of range.
//! label and segment are `none`, explanation is the fixed text
//! `"sum(amount_minor * 0.01) + count"`, components are empty. `score-batch`
//! maps `score`; `fit-chunk` accepts every chunk and keeps nothing (no
//! population parameters); `fit-finish` returns `"{}"`.
//!
//! (Like every Rust wasm32-wasip2 component it still imports a few WASI
//! interfaces from `std`; the host gives those an empty context.)

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

mod model;

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::types::{Json, PluginError, Timestamp};

struct BenchScorer;

fn score_one(input: &CustomerHistory) -> CustomerScore {
    let value = model::bench_value(
        input
            .interactions
            .iter()
            .map(|entry| entry.amount.as_ref().map(|amount| amount.minor)),
    );
    CustomerScore {
        value,
        label: None,
        segment: None,
        explanation: "sum(amount_minor * 0.01) + count".to_string(),
        components: Vec::new(),
    }
}

impl Guest for BenchScorer {
    fn score(input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        Ok(score_one(&input))
    }

    fn score_batch(inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        inputs.iter().map(|input| Ok(score_one(input))).collect()
    }

    fn fit_chunk(_chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        Ok(())
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        Ok("{}".to_string())
    }
}

export!(BenchScorer);
