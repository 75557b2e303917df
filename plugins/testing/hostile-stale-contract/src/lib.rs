//! `hostile-stale-contract` (scoring-rule): a component built against a
//! stale draft of `rapport:crm@0.1.0` (see `wit/stale.wit`): it exports
//! `rapport:crm/scoring@0.1.0` with `score`, `score-batch`, `fit-chunk` and
//! `fit-finish`, but
//! with other parameter and result types. Its export *names* are all there,
//! so only a type check finds the problem: the host must refuse it at load
//! (`LoadError::ExportTypes`), not load it and fail every call.
//!
//! Capabilities imported: none.

wit_bindgen::generate!({
    path: "wit",
    world: "scoring-rule",
});

use exports::rapport::crm::scoring::{CustomerScore, Guest};

struct StaleContract;

impl Guest for StaleContract {
    fn score(customer_id: String) -> CustomerScore {
        CustomerScore {
            value: 1.0,
            explanation: format!("stale score for {customer_id}"),
        }
    }

    fn score_batch(customer_ids: Vec<String>) -> Vec<CustomerScore> {
        customer_ids.into_iter().map(Self::score).collect()
    }

    fn fit_chunk(_population: Vec<String>) -> String {
        "{}".to_string()
    }

    fn fit_finish() -> String {
        "{}".to_string()
    }
}

export!(StaleContract);
