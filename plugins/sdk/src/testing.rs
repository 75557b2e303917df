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

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::log::Level;
use crate::types::{HostError, HttpError, HttpRequest, HttpResponse, SmtpError, SmtpReply, SmtpSubmission};

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
