//! The native stand-in for the host (not compiled for wasm32), so that a
//! plugin's unit tests can run code that calls [`crate::config`],
//! [`crate::kv`] and [`crate::log`] with plain `cargo test`.
//!
//! State is per thread (the test harness runs each test on its own thread),
//! so tests do not see each other's config, kv or logs. Call [`reset`] to
//! start over inside one test.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::log::Level;
use crate::types::HostError;

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
