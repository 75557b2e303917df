//! `tenant-probe`: a scoring-rule plugin that probes tenant isolation from
//! inside the sandbox. The input customer's `attributes` JSON names another
//! customer id under `"probe_customer_id"`; the plugin asks the host for it
//! (`customers.get-customer`) and reports what it saw:
//!
//! - value 1.0, label `"visible"`, explanation
//!   `"customer {id} visible (external id {external-id})"` when the host
//!   returned a customer;
//! - value 0.0, label `"not-found"`, explanation `"customer {id} not found"`
//!   when it returned none — what the host MUST answer for an id that belongs
//!   to another tenant.
//!
//! A host error from `get-customer` yields `plugin-error::unavailable`.
//! segment none, components empty. Attributes that are not a JSON object or
//! lack a string `"probe_customer_id"` yield `plugin-error::invalid-input`.
//! `score-batch` maps `score`.
//!
//! Memory residue: every `score` first remembers the input customer's id in
//! a static (guest linear memory); `fit-chunk` accepts every chunk and
//! changes nothing; `fit-finish` returns `{"remembered": <that id, or null>}`
//! (after any number of chunks, zero included) and keeps the id, so it can
//! be asked again. Within one instance `fit-finish` sees the last scored
//! id; a fresh instance, even in a reused pool slot that served another
//! tenant, must see `null`.
//!
//! Capability imported: `customers`.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::customers::get_customer;
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::types::{Json, PluginError, Timestamp};

const PROBE_ATTRIBUTE: &str = "probe_customer_id";

struct TenantProbe;

/// The last customer id `score` saw in this instance.
static REMEMBERED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn probe_id(attributes: &str) -> Result<String, PluginError> {
    let value: serde_json::Value = serde_json::from_str(attributes)
        .map_err(|err| PluginError::InvalidInput(format!("attributes are not JSON: {err}")))?;
    value
        .get(PROBE_ATTRIBUTE)
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| PluginError::InvalidInput(format!("attribute \"{PROBE_ATTRIBUTE}\" (a string) is missing")))
}

impl Guest for TenantProbe {
    fn score(input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        if let Ok(mut remembered) = REMEMBERED.lock() {
            *remembered = Some(input.customer.id.clone());
        }
        let id = probe_id(&input.customer.attributes)?;
        let found = get_customer(&id).map_err(|error| PluginError::Unavailable(format!("get-customer: {error:?}")))?;
        let (value, label, explanation) = match found {
            Some(found) => (
                1.0,
                "visible",
                format!("customer {id} visible (external id {})", found.external_id),
            ),
            None => (0.0, "not-found", format!("customer {id} not found")),
        };
        Ok(CustomerScore {
            value,
            label: Some(label.to_string()),
            segment: None,
            explanation,
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
        let remembered = REMEMBERED.lock().ok().and_then(|r| r.clone());
        Ok(serde_json::json!({ "remembered": remembered }).to_string())
    }
}

export!(TenantProbe);
