//! `test-clock` (scoring-rule): looks at what WASI shows of time and chance.
//!
//! `score` reads the wall clock (`std::time::SystemTime`), then the
//! monotonic clock (`std::time::Instant`), spins for a while, reads both
//! again, and draws 16 bytes from `wasi:random/random` (`getrandom`):
//!
//! - value: the first wall-clock reading, ms since the Unix epoch;
//! - label: the 16 random bytes, lowercase hex;
//! - segment: none; explanation: `"wall {first} {second}"` (ms);
//! - components: `wall_first_ms`, `wall_second_ms`, `monotonic_elapsed_ns`.
//!
//! `score-batch` scores every input the same way; `fit-chunk` accepts
//! anything; `fit-finish` returns `{"wall_ms": <wall clock>}`.
//!
//! The host must show the call's `now` on both clocks (so the two readings
//! are equal, and elapsed monotonic time is 0) and a random stream seeded per
//! call (the same call gives the same bytes). Capabilities imported: none.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::types::{Json, PluginError, Timestamp};

struct TestClock;

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(-1.0, |d| d.as_millis() as f64)
}

fn observe() -> Result<CustomerScore, PluginError> {
    let first = wall_ms();
    let started = Instant::now();
    // Long enough for any real clock to move (a few ms of work).
    let mut x = 0u64;
    for i in 0..5_000_000u64 {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    let elapsed = started.elapsed().as_nanos() as f64;
    let second = wall_ms();
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| PluginError::Internal(format!("random: {e}")))?;
    let label: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(CustomerScore {
        value: first,
        label: Some(label),
        segment: None,
        explanation: format!("wall {first} {second} ({x})"),
        components: vec![
            ("wall_first_ms".into(), first),
            ("wall_second_ms".into(), second),
            ("monotonic_elapsed_ns".into(), elapsed),
        ],
    })
}

impl Guest for TestClock {
    fn score(_input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        observe()
    }

    fn score_batch(inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        inputs.iter().map(|_| observe()).collect()
    }

    fn fit_chunk(_chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        Ok(())
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        Ok(format!("{{\"wall_ms\":{}}}", wall_ms()))
    }
}

export!(TestClock);
