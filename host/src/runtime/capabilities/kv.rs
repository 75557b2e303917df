//! Capability `kv`: a key-value store private to (tenant, plugin), with the
//! manifest's `kv_max_bytes` quota enforced by the services.

use wasmtime::component::{HasSelf, Linker};

use super::host_error;
use crate::runtime::contract_v0_1_0::rapport::crm::kv::{self, HostError};
use crate::runtime::host_state::HostState;

/// `list-keys` returns at most this many keys (the contract's promise).
const MAX_KEYS: u32 = 1000;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    kv::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, HostError>> {
        Ok(self
            .services
            .kv_get(&self.tenant, &self.plugin_id, &key)
            .await
            .map_err(host_error))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), HostError>> {
        let max = self.limits.kv_max_bytes;
        Ok(self
            .services
            .kv_set(&self.tenant, &self.plugin_id, &key, &value, max)
            .await
            .map_err(host_error))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), HostError>> {
        Ok(self
            .services
            .kv_delete(&self.tenant, &self.plugin_id, &key)
            .await
            .map_err(host_error))
    }

    async fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, HostError>> {
        Ok(self
            .services
            .kv_list_keys(&self.tenant, &self.plugin_id, &prefix, MAX_KEYS)
            .await
            .map_err(host_error))
    }
}
