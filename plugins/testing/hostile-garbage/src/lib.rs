//! `hostile-garbage` (scoring-rule): returns well-typed nonsense the host
//! must validate instead of storing:
//!
//! - `score`: value NaN; components `[("pos_inf", +inf), ("neg_inf", -inf),
//!   ("nan", NaN)]`; label `"nul\0byte"` and explanation `"nul\0byte"`
//!   (a NUL character: valid UTF-8, but PostgreSQL TEXT refuses it);
//!   segment `""` (empty).
//! - `score-batch`: returns NO results whatever the input (the contract says
//!   one per input, in order): the host must detect the length mismatch.
//! - `fit-chunk`: accepts every chunk (a unit result leaves no room for
//!   garbage).
//! - `fit-finish`: returns `"not json {"`, which is not the JSON the contract
//!   asks for. It does so after any number of chunks, zero included, so a
//!   whole fit always ends in garbage.
//!
//! Capabilities imported: none.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::types::{Json, PluginError, Timestamp};

struct HostileGarbage;

impl Guest for HostileGarbage {
    fn score(_input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        Ok(CustomerScore {
            value: f64::NAN,
            label: Some("nul\0byte".to_string()),
            segment: Some(String::new()),
            explanation: "nul\0byte".to_string(),
            components: vec![
                ("pos_inf".to_string(), f64::INFINITY),
                ("neg_inf".to_string(), f64::NEG_INFINITY),
                ("nan".to_string(), f64::NAN),
            ],
        })
    }

    fn score_batch(_inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        Vec::new()
    }

    fn fit_chunk(_chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        Ok(())
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        Ok("not json {".to_string())
    }
}

export!(HostileGarbage);
