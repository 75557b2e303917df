//! Capability `loyalty`: read loyalty accounts, ledgers, tiers and rewards.

use wasmtime::component::{HasSelf, Linker};

use super::{host_error, page_limit};
use crate::runtime::contract_v0_1_0::rapport::crm::loyalty::{self, HostError, LedgerPage};
use crate::runtime::contract_v0_1_0::types::{LoyaltyAccount, Reward, Tier};
use crate::runtime::host_state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    loyalty::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl loyalty::Host for HostState {
    async fn get_account(
        &mut self,
        customer_id: String,
    ) -> wasmtime::Result<Result<Option<LoyaltyAccount>, HostError>> {
        Ok(self
            .services
            .get_account(&self.tenant, &customer_id)
            .await
            .map_err(host_error))
    }

    async fn list_ledger(
        &mut self,
        customer_id: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<LedgerPage, HostError>> {
        Ok(self
            .services
            .list_ledger(&self.tenant, &customer_id, cursor.as_deref(), page_limit(limit))
            .await
            .map_err(host_error))
    }

    async fn list_tiers(&mut self) -> wasmtime::Result<Result<Vec<Tier>, HostError>> {
        Ok(self.services.list_tiers(&self.tenant).await.map_err(host_error))
    }

    async fn list_rewards(&mut self) -> wasmtime::Result<Result<Vec<Reward>, HostError>> {
        Ok(self.services.list_rewards(&self.tenant).await.map_err(host_error))
    }
}
