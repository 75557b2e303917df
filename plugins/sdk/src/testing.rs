//! The native stand-in for the host (not compiled for wasm32), so that a
//! plugin's unit tests can run code that calls [`crate::config`],
//! [`crate::kv`], [`crate::log`], [`crate::host::http`] and
//! [`crate::host::smtp`] with plain `cargo test`.
//!
//! Outbound HTTP and SMTP are answered by a handler the test installs
//! ([`set_http_handler`], [`set_smtp_handler`]), which sees exactly what the
//! plugin would have sent; without one they fail with a connection error.
//!
//! State is per thread (the test harness runs each test on its own thread),
//! so tests do not see each other's config, kv or logs. Call [`reset`] to
//! start over inside one test.
//!
//! Inputs need no double: build them with the types' constructors, e.g.
//! `History::new(Customer::new("c1"), now).with_entry(HistoryEntry::purchase(at, "USD", 1250))`
//! (see [`crate::History`] and [`crate::HistoryEntry`]), or
//! [`crate::History::from_interactions`] from full interaction records.
//!
//! A scoring rule's population fit runs natively with [`fit`] (or
//! [`fit_in_chunks`]): chunks of summaries through
//! [`ScoringRule::fit_rows`], then [`ScoringRule::fit`] on all the rows, as
//! the host and the SDK's guest adapter do.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::log::Level;
use crate::traits::{FIT_CHUNK_MAX, ScoringRule};
use crate::types::{
    HostError, HttpError, HttpRequest, HttpResponse, PluginError, PurchaseSummary, SmtpError, SmtpReply,
    SmtpSubmission, Timestamp,
};

type HttpHandler = Box<dyn FnMut(&HttpRequest) -> Result<HttpResponse, HttpError>>;
type SmtpHandler = Box<dyn FnMut(&SmtpSubmission) -> Result<SmtpReply, SmtpError>>;

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    config: Option<String>,
    kv: BTreeMap<String, Vec<u8>>,
    kv_failure: Option<HostError>,
    logs: Vec<LogLine>,
    http: Option<HttpHandler>,
    smtp: Option<SmtpHandler>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|state| f(&mut state.borrow_mut()))
}

/// Clears config, kv, injected failures and logs of this thread.
pub fn reset() {
    with(|s| *s = State::default());
}

/// Sets the configuration `config()` returns (`{}` until set).
pub fn set_config(config: serde_json::Value) {
    set_config_json(&config.to_string());
}

/// Sets the raw configuration text (to test invalid configurations).
pub fn set_config_json(text: &str) {
    with(|s| s.config = Some(text.to_owned()));
}

pub(crate) fn config_json() -> String {
    with(|s| s.config.clone().unwrap_or_else(|| "{}".to_owned()))
}

/// Makes every kv call fail with `error` (`None` to heal).
pub fn fail_kv(error: Option<HostError>) {
    with(|s| s.kv_failure = error);
}

/// A snapshot of this thread's kv store.
pub fn kv_entries() -> BTreeMap<String, Vec<u8>> {
    with(|s| s.kv.clone())
}

/// The log lines captured on this thread, oldest first.
pub fn logs() -> Vec<LogLine> {
    with(|s| s.logs.clone())
}

pub(crate) fn push_log(level: Level, message: &str, fields: &[(&str, &str)]) {
    with(|s| {
        s.logs.push(LogLine {
            level,
            message: message.to_owned(),
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        })
    });
}

/// Answers this thread's outbound HTTP requests with `handler`.
pub fn set_http_handler(handler: impl FnMut(&HttpRequest) -> Result<HttpResponse, HttpError> + 'static) {
    with(|s| s.http = Some(Box::new(handler)));
}

/// Answers this thread's SMTP submissions with `handler`.
pub fn set_smtp_handler(handler: impl FnMut(&SmtpSubmission) -> Result<SmtpReply, SmtpError> + 'static) {
    with(|s| s.smtp = Some(Box::new(handler)));
}

pub(crate) fn http_send(request: &HttpRequest) -> Result<HttpResponse, HttpError> {
    // Taken out while it runs, so a handler may itself use this module.
    let handler = with(|s| s.http.take());
    match handler {
        Some(mut h) => {
            let result = h(request);
            with(|s| {
                s.http.get_or_insert(h);
            });
            result
        }
        None => Err(HttpError::Connection("no outbound HTTP in native tests".into())),
    }
}

pub(crate) fn smtp_send(submission: &SmtpSubmission) -> Result<SmtpReply, SmtpError> {
    let handler = with(|s| s.smtp.take());
    match handler {
        Some(mut h) => {
            let result = h(submission);
            with(|s| {
                s.smtp.get_or_insert(h);
            });
            result
        }
        None => Err(SmtpError::Connection("no outbound SMTP in native tests".into())),
    }
}

/// Runs `T`'s whole population fit the way the host does: the summaries in
/// chunks of [`FIT_CHUNK_MAX`] (none for an empty population) through
/// [`ScoringRule::fit_rows`], then [`ScoringRule::fit`] on every row, in
/// order. Returns the fit summary, or the first error (a failed chunk ends
/// the fit, as on the host).
pub fn fit<T: ScoringRule>(population: &[PurchaseSummary], now: Timestamp) -> Result<serde_json::Value, PluginError> {
    fit_in_chunks::<T>(population, FIT_CHUNK_MAX, now)
}

/// [`fit`] with chunks of `chunk_size` summaries (at least 1), to check
/// that a rule's result does not depend on where the chunks split.
pub fn fit_in_chunks<T: ScoringRule>(
    population: &[PurchaseSummary],
    chunk_size: usize,
    now: Timestamp,
) -> Result<serde_json::Value, PluginError> {
    let mut rows = Vec::new();
    for chunk in population.chunks(chunk_size.max(1)) {
        rows.append(&mut T::fit_rows(chunk, now)?);
    }
    T::fit(rows, now)
}

/// The in-memory kv backend, with the host's signatures.
pub(crate) mod kv {
    use super::with;
    use crate::types::HostError;

    fn check() -> Result<(), HostError> {
        with(|s| s.kv_failure.clone()).map_or(Ok(()), Err)
    }

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
        check()?;
        Ok(with(|s| s.kv.get(key).cloned()))
    }

    pub fn set(key: &str, value: &[u8]) -> Result<(), HostError> {
        check()?;
        with(|s| s.kv.insert(key.to_owned(), value.to_vec()));
        Ok(())
    }

    pub fn delete(key: &str) -> Result<(), HostError> {
        check()?;
        with(|s| s.kv.remove(key));
        Ok(())
    }

    pub fn list_keys(prefix: &str) -> Result<Vec<String>, HostError> {
        check()?;
        Ok(with(|s| {
            s.kv.keys()
                .filter(|k| k.starts_with(prefix))
                .take(1000)
                .cloned()
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{History, Purchase, Score};

    /// A rule whose fit keeps one number per customer with a purchase (the
    /// purchase count) and sums them; a customer id "bad" fails its chunk.
    struct Counter;

    impl ScoringRule for Counter {
        type FitRow = (u32, usize);

        fn score(_: &History) -> Result<Score, PluginError> {
            Err(PluginError::Internal("not scored here".into()))
        }

        fn fit_rows(chunk: &[PurchaseSummary], now: Timestamp) -> Result<Vec<(u32, usize)>, PluginError> {
            if chunk.iter().any(|s| s.customer_id == "bad") {
                return Err(PluginError::InvalidInput("bad customer".into()));
            }
            Ok(chunk
                .iter()
                .filter(|s| !s.purchases.is_empty())
                .map(|s| (s.purchases.iter().filter(|p| p.at <= now).count() as u32, chunk.len()))
                .collect())
        }

        fn fit(rows: Vec<(u32, usize)>, now: Timestamp) -> Result<serde_json::Value, PluginError> {
            let counts: Vec<u32> = rows.iter().map(|r| r.0).collect();
            let chunk_sizes: Vec<usize> = rows.iter().map(|r| r.1).collect();
            Ok(serde_json::json!({"now": now, "counts": counts, "chunk_sizes": chunk_sizes}))
        }
    }

    fn customer(id: &str, purchases: usize) -> PurchaseSummary {
        PurchaseSummary {
            customer_id: id.into(),
            created_at: 0,
            purchases: (0..purchases)
                .map(|n| Purchase {
                    at: n as i64,
                    amount_minor: 100,
                    currency: "USD".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_fit_runs_in_chunks_and_keeps_the_rows_in_order() {
        let population: Vec<PurchaseSummary> = (0..5).map(|n| customer(&n.to_string(), n)).collect();
        // Customer 0 has no purchase, hence no row; chunks of 2, 2 and 1.
        assert_eq!(
            fit_in_chunks::<Counter>(&population, 2, 3),
            Ok(serde_json::json!({"now": 3, "counts": [1, 2, 3, 4], "chunk_sizes": [2, 2, 2, 1]}))
        );
        // One chunk by default (at most FIT_CHUNK_MAX).
        assert_eq!(
            fit::<Counter>(&population, 10),
            Ok(serde_json::json!({"now": 10, "counts": [1, 2, 3, 4], "chunk_sizes": [5, 5, 5, 5]}))
        );
        // No chunk at all: `fit` still runs, on no rows.
        assert_eq!(
            fit::<Counter>(&[], 7),
            Ok(serde_json::json!({"now": 7, "counts": [], "chunk_sizes": []}))
        );
        // A failed chunk ends the fit with its error.
        let with_bad = vec![customer("a", 1), customer("bad", 1)];
        assert_eq!(
            fit_in_chunks::<Counter>(&with_bad, 1, 3),
            Err(PluginError::InvalidInput("bad customer".into()))
        );
    }

    #[test]
    fn a_rule_without_a_fit_returns_an_empty_object() {
        struct Plain;
        impl ScoringRule for Plain {
            type FitRow = ();
            fn score(_: &History) -> Result<Score, PluginError> {
                Err(PluginError::Internal("not scored here".into()))
            }
        }
        assert_eq!(Plain::fit_rows(&[customer("a", 2)], 5), Ok(vec![]));
        assert_eq!(fit::<Plain>(&[customer("a", 2)], 5), Ok(serde_json::json!({})));
    }
}
