//! Capability `interactions`: read a customer's contact history.

use wasmtime::component::{HasSelf, Linker};

use super::{host_error, page_limit};
use crate::runtime::contract_v0_1_0::rapport::crm::interactions::{self, HostError, InteractionPage};
use crate::runtime::host_state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    interactions::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl interactions::Host for HostState {
    async fn list_interactions(
        &mut self,
        customer_id: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<InteractionPage, HostError>> {
        Ok(self
            .services
            .list_interactions(&self.tenant, &customer_id, cursor.as_deref(), page_limit(limit))
            .await
            .map_err(host_error))
    }
}
