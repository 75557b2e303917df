//! The host side of every capability: tenant-scoped data access that the
//! runtime calls on a plugin's behalf.
//!
//! The runtime passes the tenant from its own host state (never from guest
//! input) as the first argument of every method, so an implementation only
//! has to do what the store already does: filter by tenant. The server
//! implements this over the database; [`super::fixture::FixtureServices`]
//! implements it in memory for tests, benchmarks and `rapport plugin run`.

use async_trait::async_trait;

use super::contract_v0_1_0::rapport::crm::{catalog, customers, interactions, loyalty};
use super::contract_v0_1_0::types::{Customer, LoyaltyAccount, Product, Reward, Tier};
use crate::store::TenantId;

/// Why a service call failed. Mapped onto the contract's `host-error`, which
/// every data-access function of the contract returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The cursor, key or argument was not acceptable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A quota (key-value size) would be exceeded.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The backing store could not serve the call.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Tenant-scoped data behind the host capabilities. Every method answers for
/// `tenant` only: an id belonging to another tenant reads as `None`/empty.
/// `limit` arguments arrive already capped by the runtime (1..=500).
#[async_trait]
pub trait HostServices: Send + Sync {
    async fn get_customer(&self, tenant: &TenantId, id: &str) -> ServiceResult<Option<Customer>>;
    async fn get_customer_by_external_id(
        &self,
        tenant: &TenantId,
        external_id: &str,
    ) -> ServiceResult<Option<Customer>>;
    async fn list_customers(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<customers::CustomerPage>;

    /// Newest first; an unknown customer yields an empty page.
    async fn list_interactions(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<interactions::InteractionPage>;

    async fn get_account(&self, tenant: &TenantId, customer_id: &str) -> ServiceResult<Option<LoyaltyAccount>>;
    /// Newest first.
    async fn list_ledger(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<loyalty::LedgerPage>;
    async fn list_tiers(&self, tenant: &TenantId) -> ServiceResult<Vec<Tier>>;
    async fn list_rewards(&self, tenant: &TenantId) -> ServiceResult<Vec<Reward>>;

    async fn get_product(&self, tenant: &TenantId, sku: &str) -> ServiceResult<Option<Product>>;
    async fn list_products(
        &self,
        tenant: &TenantId,
        category: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<catalog::ProductPage>;

    /// The key-value store is private to (tenant, plugin).
    async fn kv_get(&self, tenant: &TenantId, plugin_id: &str, key: &str) -> ServiceResult<Option<Vec<u8>>>;
    /// Fails with [`ServiceError::QuotaExceeded`] when the plugin's total
    /// (sum of key and value lengths) for this tenant would exceed `max_bytes`.
    async fn kv_set(
        &self,
        tenant: &TenantId,
        plugin_id: &str,
        key: &str,
        value: &[u8],
        max_bytes: u64,
    ) -> ServiceResult<()>;
    async fn kv_delete(&self, tenant: &TenantId, plugin_id: &str, key: &str) -> ServiceResult<()>;
    /// Keys starting with `prefix`, in order, at most `limit`.
    async fn kv_list_keys(
        &self,
        tenant: &TenantId,
        plugin_id: &str,
        prefix: &str,
        limit: u32,
    ) -> ServiceResult<Vec<String>>;
}
