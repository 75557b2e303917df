//! `hostile-huge-output` (scoring-rule): results far over any output cap,
//! built so that the host must refuse them *before* copying them out of
//! guest memory (needs `memory_mb` of 128: the data lives in the guest).
//!
//! - `score`: value 1.0 and an explanation of 50,000,000 `'x'`;
//! - `score-batch`: for the first input one score (value 2.0) whose
//!   `components` are 64 entries all named by the same 32 MiB buffer: one
//!   allocation in the guest, 2 GiB if the host copied every name;
//! - `fit-chunk`: accepts every chunk; `fit-finish`: `"{}"`.
//!
//! The aliasing is deliberately unsound Rust (64 `String`s owning one
//! buffer); it is what any guest can put in a canonical-ABI result, and the
//! guest never drops them: the host must stop at the first name over its
//! budget, before the guest's post-return would free anything.
//!
//! Capabilities imported: none.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::types::{Json, PluginError, Timestamp};

const HUGE_BYTES: usize = 50_000_000;
const SHARED_BYTES: usize = 32 << 20;
const ALIASES: usize = 64;

struct HostileHugeOutput;

fn aliased() -> CustomerScore {
    let mut buffer = std::mem::ManuallyDrop::new(vec![b'y'; SHARED_BYTES]);
    let (ptr, len) = (buffer.as_mut_ptr(), buffer.len());
    let components = (0..ALIASES)
        .map(|_| {
            // SAFETY: not safe at all, on purpose (see the module doc):
            // every name owns the same bytes, which are valid UTF-8.
            let name = unsafe { String::from_raw_parts(ptr, len, len) };
            (name, 1.0)
        })
        .collect();
    CustomerScore {
        value: 2.0,
        label: None,
        segment: None,
        explanation: String::new(),
        components,
    }
}

impl Guest for HostileHugeOutput {
    fn score(_input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        Ok(CustomerScore {
            value: 1.0,
            label: None,
            segment: None,
            explanation: "x".repeat(HUGE_BYTES),
            components: Vec::new(),
        })
    }

    fn score_batch(inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        if inputs.is_empty() {
            return Vec::new();
        }
        let mut out = vec![Ok(aliased())];
        out.extend(
            inputs
                .iter()
                .skip(1)
                .map(|_| Err(PluginError::Internal("only one".into()))),
        );
        out
    }

    fn fit_chunk(_chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        Ok(())
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        Ok("{}".into())
    }
}

export!(HostileHugeOutput);
