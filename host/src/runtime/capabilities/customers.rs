//! Capability `customers`: read the calling tenant's customers.

use wasmtime::component::{HasSelf, Linker};

use super::{host_error, page_limit};
use crate::runtime::contract_v0_1_0::rapport::crm::customers::{self, CustomerPage, HostError};
use crate::runtime::contract_v0_1_0::types::Customer;
use crate::runtime::host_state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    customers::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl customers::Host for HostState {
    async fn get_customer(&mut self, id: String) -> wasmtime::Result<Result<Option<Customer>, HostError>> {
        Ok(self.services.get_customer(&self.tenant, &id).await.map_err(host_error))
    }

    async fn get_customer_by_external_id(
        &mut self,
        external_id: String,
    ) -> wasmtime::Result<Result<Option<Customer>, HostError>> {
        Ok(self
            .services
            .get_customer_by_external_id(&self.tenant, &external_id)
            .await
            .map_err(host_error))
    }

    async fn list_customers(
        &mut self,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<CustomerPage, HostError>> {
        Ok(self
            .services
            .list_customers(&self.tenant, cursor.as_deref(), page_limit(limit))
            .await
            .map_err(host_error))
    }
}
