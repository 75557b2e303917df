//! Capability `log`: structured log lines captured per call, capped at the
//! plugin's `max_log_bytes` (lines over the cap are dropped and counted, so
//! a chatty plugin cannot flood the host's logs or memory).

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::contract_v0_1_0::rapport::crm::log::{self, Level};
use crate::runtime::host_state::{HostState, LogLevel, LogLine};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl log::Host for HostState {
    async fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.log.push(LogLine { level, message, fields });
        Ok(())
    }
}
