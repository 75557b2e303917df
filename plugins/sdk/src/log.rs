//! Capability `log`: structured log lines, captured per call by the host
//! and capped (`max_log_bytes`; lines over the cap are dropped and
//! counted). Logging never fails the call.
//!
//! On wasm32 these call the host; natively they append to the lines of
//! [`crate::testing`].

use serde::{Deserialize, Serialize};

/// Severity of a log line (WIT `log.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Logs `message` with structured `fields` (name, value).
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::scoring_rule::rapport::crm::log as wit;
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        wit::log(level, message, &fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::push_log(level, message, fields);
}

pub fn trace(message: &str) {
    log(Level::Trace, message, &[]);
}

pub fn debug(message: &str) {
    log(Level::Debug, message, &[]);
}

pub fn info(message: &str) {
    log(Level::Info, message, &[]);
}

pub fn warn(message: &str) {
    log(Level::Warn, message, &[]);
}

pub fn error(message: &str) {
    log(Level::Error, message, &[]);
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::testing::{self, LogLine};

    #[test]
    fn lines_are_captured_natively() {
        testing::reset();
        info("fit done");
        log(Level::Warn, "slow", &[("ms", "1200")]);
        assert_eq!(
            testing::logs(),
            vec![
                LogLine {
                    level: Level::Info,
                    message: "fit done".into(),
                    fields: vec![]
                },
                LogLine {
                    level: Level::Warn,
                    message: "slow".into(),
                    fields: vec![("ms".into(), "1200".into())]
                },
            ]
        );
    }
}
