//! Capability `config`: this plugin's configuration for the calling tenant.

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::contract_v0_1_0::rapport::crm::config;
use crate::runtime::host_state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl config::Host for HostState {
    async fn get_config(&mut self) -> wasmtime::Result<String> {
        Ok(if self.config_json.trim().is_empty() {
            "{}".to_owned()
        } else {
            self.config_json.clone()
        })
    }
}
