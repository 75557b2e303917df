//! `hostile-ungranted` (scoring-rule): imports the `kv` capability (its
//! `score` reads the key `"probe"`), but the test manifest does NOT grant
//! `kv`. Loading must fail, naming the import
//! (`rapport:crm/kv@0.1.0`), before any code runs. Were it loaded anyway,
//! `score` would return value 1.0 if the key exists, else 0.0 (also on a
//! host error: this plugin exists only to be refused). `fit-chunk` accepts
//! every chunk; `fit-finish` returns `"{}"`.
//!
//! Capabilities imported: `kv` (deliberately ungranted).

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::kv;
use rapport::crm::types::{Json, PluginError, Timestamp};

struct HostileUngranted;

impl Guest for HostileUngranted {
    fn score(_input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        let found = matches!(kv::get("probe"), Ok(Some(_)));
        Ok(CustomerScore {
            value: if found { 1.0 } else { 0.0 },
            label: None,
            segment: None,
            explanation: format!("kv key \"probe\" present: {found}"),
            components: Vec::new(),
        })
    }

    fn score_batch(inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        inputs.into_iter().map(Self::score).collect()
    }

    fn fit_chunk(_chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        Ok(())
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        Ok("{}".to_string())
    }
}

export!(HostileUngranted);
