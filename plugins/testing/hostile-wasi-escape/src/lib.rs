//! `hostile-wasi-escape` (scoring-rule): tries to reach outside the sandbox
//! through the WASI interfaces every Rust wasm32-wasip2 component imports,
//! and reports what worked. In order:
//!
//! 1. `fs-read`: `std::fs::read_to_string("/etc/passwd")`
//! 2. `fs-list`: `std::fs::read_dir("/")`
//! 3. `fs-write`: `std::fs::write("/tmp/rapport-wasi-escape", ..)`
//! 4. `env-home`: `std::env::var("HOME")`
//! 5. `env-any`: `std::env::vars()` yields at least one variable
//! 6. `tcp`: `std::net::TcpStream::connect("127.0.0.1:5432")`
//!
//! `score`: value = number of attempts that succeeded, label `"contained"`
//! when 0 else `"escaped"`, explanation = `"{name}: ok|failed (...)"` for each
//! attempt joined by `"; "`, components `[(name, 1.0 or 0.0), ...]`. The
//! host gives plugins an empty WASI context (no preopened dirs, no env, no
//! network), so it must score exactly 0. `score-batch` maps `score`;
//! `fit-chunk` accepts every chunk and tries nothing; `fit-finish` makes the
//! six attempts and returns `{"successes":N}` (after any number of chunks,
//! zero included).
//!
//! Capabilities imported: none (only WASI).

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::types::{Json, PluginError, Timestamp};
use std::time::Duration;

struct HostileWasiEscape;

/// One attempt: its name and Ok(what it got) or Err(why it failed).
type Attempt = (&'static str, Result<String, String>);

fn attempts() -> Vec<Attempt> {
    let fs_read = std::fs::read_to_string("/etc/passwd")
        .map(|text| format!("{} bytes", text.len()))
        .map_err(|err| err.to_string());
    let fs_list = std::fs::read_dir("/")
        .map(|entries| format!("{} entries", entries.count()))
        .map_err(|err| err.to_string());
    let fs_write = std::fs::write("/tmp/rapport-wasi-escape", b"escaped")
        .map(|()| "written".to_string())
        .map_err(|err| err.to_string());
    let env_home = std::env::var("HOME").map_err(|err| err.to_string());
    let variables = std::env::vars().count();
    let env_any = if variables > 0 {
        Ok(format!("{variables} variables"))
    } else {
        Err("no variables".to_string())
    };
    let tcp = "127.0.0.1:5432"
        .parse()
        .map_err(|err: std::net::AddrParseError| err.to_string())
        .and_then(|address| {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1))
                .map(|_| "connected".to_string())
                .map_err(|err| err.to_string())
        });
    vec![
        ("fs-read", fs_read),
        ("fs-list", fs_list),
        ("fs-write", fs_write),
        ("env-home", env_home),
        ("env-any", env_any),
        ("tcp", tcp),
    ]
}

fn successes(attempts: &[Attempt]) -> usize {
    attempts.iter().filter(|(_, outcome)| outcome.is_ok()).count()
}

impl Guest for HostileWasiEscape {
    fn score(_input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        let attempts = attempts();
        let escaped = successes(&attempts);
        let explanation = attempts
            .iter()
            .map(|(name, outcome)| match outcome {
                Ok(detail) => format!("{name}: ok ({detail})"),
                Err(reason) => format!("{name}: failed ({reason})"),
            })
            .collect::<Vec<_>>()
            .join("; ");
        Ok(CustomerScore {
            value: escaped as f64,
            label: Some(if escaped == 0 { "contained" } else { "escaped" }.to_string()),
            segment: None,
            explanation,
            components: attempts
                .iter()
                .map(|(name, outcome)| (name.to_string(), if outcome.is_ok() { 1.0 } else { 0.0 }))
                .collect(),
        })
    }

    fn score_batch(inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        inputs.into_iter().map(Self::score).collect()
    }

    fn fit_chunk(_chunk: Vec<PurchaseSummary>, _now: Timestamp) -> Result<(), PluginError> {
        Ok(())
    }

    fn fit_finish(_now: Timestamp) -> Result<Json, PluginError> {
        Ok(format!("{{\"successes\":{}}}", successes(&attempts())))
    }
}

export!(HostileWasiEscape);
