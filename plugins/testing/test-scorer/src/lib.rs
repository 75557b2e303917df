//! `test-scorer`: the well-behaved scoring-rule plugin the runtime tests load.
//! Deterministic on purpose, because the tests assert exact values:
//!
//! - `n` = number of history entries whose kind (`strings[kind]`) is
//!   `"purchase"`; `spend` = sum of their `amount.minor` (purchases without
//!   an amount add 0; currencies are not converted).
//! - `value` = `n` + `bonus`, where `bonus` is the number under `"bonus"` in
//!   the tenant's plugin config (`config.get-config()`), 0 when absent, so a
//!   test can prove that per-tenant config reaches the plugin.
//! - `label` = `n` as a decimal string (without the bonus).
//! - `segment` = `"buyer"` when `n >= 1`, else `"prospect"`.
//! - `explanation` = `"{n} purchase(s), spend {spend} minor units, bonus {bonus}"`.
//! - `components` = `[("purchases", n), ("spend_minor", spend)]`.
//! - `score-batch` scores each input in order (config read once per batch).
//! - A fit (`fit-chunk` × k, then `fit-finish`) logs exactly one `info`
//!   line, at `fit-finish`: message `"fit over {len} customers"`, field
//!   `("population", "{len}")`, where `len` is the number of summaries over
//!   every chunk since the last `fit-finish` (0 when there was no chunk),
//!   and returns `"{}"`. `fit-chunk` only adds its chunk's length to a
//!   counter and logs nothing; `fit-finish` resets the counter, so the next
//!   `fit-chunk` starts a new fit.
//!
//! A config that is not a JSON object, or whose `"bonus"` is not a number,
//! yields `plugin-error::invalid-config`. An entry whose `kind` index is not
//! in `strings` (a host bug) yields `plugin-error::invalid-input` for that
//! customer, never a trap.
//!
//! Capabilities imported: `config`, `log`.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::config::get_config;
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::log::{Level, log};
use rapport::crm::types::{Json, PluginError, Timestamp};
use std::sync::atomic::{AtomicU64, Ordering};

struct TestScorer;

/// Summaries seen by `fit-chunk` since the last `fit-finish`: the only thing
/// this plugin's fit needs, so chunks are counted, never kept. The guest is
/// single-threaded; the atomic is just a `static` that needs no `unsafe`.
static FIT_POPULATION: AtomicU64 = AtomicU64::new(0);

/// Adds one chunk's length to the running fit.
fn count_chunk(len: usize) {
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    // fetch_update never fails with a closure that always returns Some.
    let _ = FIT_POPULATION.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seen| {
        Some(seen.saturating_add(len))
    });
}

/// Ends the running fit: its population size, with the counter reset to 0.
fn take_population() -> u64 {
    FIT_POPULATION.swap(0, Ordering::Relaxed)
}

/// Reads `"bonus"` from the tenant's config; the only knob this plugin has.
fn bonus() -> Result<f64, PluginError> {
    let text = get_config();
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| PluginError::InvalidConfig(format!("config is not JSON: {err}")))?;
    let object = config
        .as_object()
        .ok_or_else(|| PluginError::InvalidConfig("config is not a JSON object".into()))?;
    match object.get("bonus") {
        None => Ok(0.0),
        Some(value) => value
            .as_f64()
            .ok_or_else(|| PluginError::InvalidConfig("\"bonus\" must be a number".into())),
    }
}

/// The kind of every entry, resolved through `strings`. An index the host got
/// wrong is reported as the customer's error rather than a trap, so one bad
/// history cannot take the instance (and the rest of a batch) down with it.
fn kinds(input: &CustomerHistory) -> Result<Vec<&str>, PluginError> {
    input
        .interactions
        .iter()
        .enumerate()
        .map(|(position, entry)| {
            input
                .strings
                .get(entry.kind as usize)
                .map(String::as_str)
                .ok_or_else(|| {
                    PluginError::InvalidInput(format!(
                        "interaction {position}: kind index {} is out of range ({} strings)",
                        entry.kind,
                        input.strings.len()
                    ))
                })
        })
        .collect()
}

fn score_one(input: &CustomerHistory, bonus: f64) -> Result<CustomerScore, PluginError> {
    let kinds = kinds(input)?;
    let purchases: Vec<_> = input
        .interactions
        .iter()
        .zip(&kinds)
        .filter(|(_, kind)| **kind == "purchase")
        .map(|(entry, _)| entry)
        .collect();
    let count = purchases.len();
    let spend: i64 = purchases
        .iter()
        .filter_map(|entry| entry.amount.as_ref())
        .map(|amount| amount.minor)
        .fold(0i64, i64::saturating_add);
    Ok(CustomerScore {
        value: count as f64 + bonus,
        label: Some(count.to_string()),
        segment: Some(if count >= 1 { "buyer" } else { "prospect" }.to_string()),
        explanation: format!("{count} purchase(s), spend {spend} minor units, bonus {bonus}"),
        components: vec![
            ("purchases".to_string(), count as f64),
            ("spend_minor".to_string(), spend as f64),
        ],
    })
}

impl Guest for TestScorer {
    fn score(input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        let bonus = bonus()?;
        score_one(&input, bonus)
    }

    fn score_batch(inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        // One config read for the whole batch; a bad config fails every item
        // the same way, keeping "one result per input".
        let bonus = bonus();
        inputs
            .iter()
            .map(|input| bonus.clone().and_then(|bonus| score_one(input, bonus)))
            .collect()
    }

    fn fit_chunk(chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        count_chunk(chunk.len());
        Ok(())
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        let size = take_population();
        log(
            Level::Info,
            &format!("fit over {size} customers"),
            &[("population".to_string(), size.to_string())],
        );
        Ok("{}".to_string())
    }
}

export!(TestScorer);

#[cfg(test)]
mod tests {
    use super::*;
    use rapport::crm::inputs::{EntryAmount, HistoryEntry};
    use rapport::crm::types::Customer;

    fn entry(kind: u32, minor: Option<i64>) -> HistoryEntry {
        HistoryEntry {
            kind,
            channel: None,
            occurred_at: 0,
            amount: minor.map(|minor| EntryAmount { currency: 1, minor }),
            first_item: 0,
            item_count: 0,
            payload: None,
        }
    }

    fn history(interactions: Vec<HistoryEntry>) -> CustomerHistory {
        CustomerHistory {
            customer: Customer {
                id: "c1".into(),
                external_id: "ext-1".into(),
                name: None,
                email: None,
                phone: None,
                attributes: "{}".into(),
                created_at: 0,
            },
            interactions,
            items: Vec::new(),
            strings: vec!["purchase".into(), "USD".into(), "visit".into()],
            truncated: false,
            now: 0,
        }
    }

    #[test]
    fn counts_purchases_by_resolved_kind_and_sums_their_amounts() {
        let input = history(vec![
            entry(0, Some(1250)),
            entry(2, Some(999)),
            entry(0, None),
            entry(0, Some(-50)),
        ]);
        let score = score_one(&input, 2.5).expect("valid history");
        assert_eq!(score.value, 5.5);
        assert_eq!(score.label.as_deref(), Some("3"));
        assert_eq!(score.segment.as_deref(), Some("buyer"));
        assert_eq!(score.explanation, "3 purchase(s), spend 1200 minor units, bonus 2.5");
        assert_eq!(
            score.components,
            vec![("purchases".to_string(), 3.0), ("spend_minor".to_string(), 1200.0)]
        );
    }

    #[test]
    fn no_purchase_is_a_prospect() {
        let score = score_one(&history(vec![entry(2, Some(10))]), 0.0).expect("valid history");
        assert_eq!(score.value, 0.0);
        assert_eq!(score.segment.as_deref(), Some("prospect"));
        assert_eq!(score.explanation, "0 purchase(s), spend 0 minor units, bonus 0");
    }

    #[test]
    fn fit_counts_every_chunk_and_finishing_starts_over() {
        // One test owns the static counter, so parallel tests cannot race on it.
        assert_eq!(take_population(), 0);
        count_chunk(2);
        count_chunk(0);
        count_chunk(1);
        assert_eq!(take_population(), 3);
        assert_eq!(take_population(), 0, "fit-finish forgets the chunks");
        count_chunk(10_000);
        assert_eq!(take_population(), 10_000);
    }

    #[test]
    fn a_kind_index_outside_strings_is_invalid_input() {
        let input = history(vec![entry(0, Some(1)), entry(3, None)]);
        match score_one(&input, 0.0) {
            Err(PluginError::InvalidInput(message)) => {
                assert_eq!(message, "interaction 1: kind index 3 is out of range (3 strings)")
            }
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }
}
