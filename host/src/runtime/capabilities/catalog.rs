//! Capability `catalog`: read the tenant's product catalogue.

use wasmtime::component::{HasSelf, Linker};

use super::{host_error, page_limit};
use crate::runtime::contract_v0_1_0::rapport::crm::catalog::{self, HostError, ProductPage};
use crate::runtime::contract_v0_1_0::types::Product;
use crate::runtime::host_state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    catalog::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl catalog::Host for HostState {
    async fn get_product(&mut self, sku: String) -> wasmtime::Result<Result<Option<Product>, HostError>> {
        Ok(self.services.get_product(&self.tenant, &sku).await.map_err(host_error))
    }

    async fn list_products(
        &mut self,
        category: Option<String>,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<ProductPage, HostError>> {
        Ok(self
            .services
            .list_products(&self.tenant, category.as_deref(), cursor.as_deref(), page_limit(limit))
            .await
            .map_err(host_error))
    }
}
