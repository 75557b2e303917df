//! `FixtureServices`: an in-memory [`HostServices`] holding data for several
//! tenants, loaded from a JSON fixture. Used by the runtime's tests and
//! benchmark, and by `rapport plugin run FILE.wasm --input FIXTURE.json`
//! (a plugin author's inner loop, no database needed).
//!
//! It keeps the same tenancy rule as the real store: every lookup goes
//! through the tenant's own map, so another tenant's ids read as absent.
//!
//! Fixture format (field names are the contract's, snake_case; optional
//! fields may be omitted):
//! ```json
//! { "tenants": { "acme": {
//!     "customers": [{"id": "c1", "external_id": "E1", "attributes": "{}", "created_at": 0}],
//!     "interactions": [...], "accounts": [...], "ledger": {"c1": [...]},
//!     "tiers": [...], "rewards": [...], "products": [...] } } }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Deserialize;

use super::contract_v0_1_0::rapport::crm::{catalog, customers, interactions, loyalty};
use super::contract_v0_1_0::types::{Customer, Interaction, LedgerEntry, LoyaltyAccount, Product, Reward, Tier};
use super::services::{HostServices, ServiceError, ServiceResult};
use crate::store::TenantId;

/// The whole fixture: data per tenant id.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureData {
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantFixture>,
}

/// One tenant's records.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantFixture {
    pub customers: Vec<Customer>,
    pub interactions: Vec<Interaction>,
    pub accounts: Vec<LoyaltyAccount>,
    /// Ledger entries by customer id.
    pub ledger: BTreeMap<String, Vec<LedgerEntry>>,
    pub tiers: Vec<Tier>,
    pub rewards: Vec<Reward>,
    pub products: Vec<Product>,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read fixture {path}: {message}")]
    Read { path: String, message: String },
    #[error("invalid fixture JSON at line {line}, column {column}: {message}")]
    Parse {
        line: usize,
        column: usize,
        message: String,
    },
}

/// Key-value stores by (tenant, plugin id).
type KvStores = HashMap<(TenantId, String), BTreeMap<String, Vec<u8>>>;

/// In-memory, multi-tenant host services.
#[derive(Debug, Default)]
pub struct FixtureServices {
    data: FixtureData,
    /// (tenant, plugin) → key → value.
    kv: Mutex<KvStores>,
}

impl FixtureServices {
    pub fn new(data: FixtureData) -> FixtureServices {
        FixtureServices {
            data,
            kv: Mutex::new(HashMap::new()),
        }
    }

    pub fn from_json(json: &str) -> Result<FixtureServices, FixtureError> {
        let data = serde_json::from_str(json).map_err(|e| FixtureError::Parse {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        Ok(FixtureServices::new(data))
    }

    pub fn from_file(path: &Path) -> Result<FixtureServices, FixtureError> {
        let json = std::fs::read_to_string(path).map_err(|e| FixtureError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        FixtureServices::from_json(&json)
    }

    pub fn data(&self) -> &FixtureData {
        &self.data
    }

    /// A copy of one plugin's key-value store for one tenant.
    pub fn kv_snapshot(&self, tenant: &TenantId, plugin_id: &str) -> BTreeMap<String, Vec<u8>> {
        self.lock_kv()
            .get(&(tenant.clone(), plugin_id.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    fn tenant(&self, tenant: &TenantId) -> Option<&TenantFixture> {
        self.data.tenants.get(tenant.as_str())
    }

    fn lock_kv(&self) -> std::sync::MutexGuard<'_, KvStores> {
        self.kv.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Offset cursors: the fixture is static, so an index is a stable position.
fn page<T: Clone>(items: Vec<&T>, cursor: Option<&str>, limit: u32) -> ServiceResult<(Vec<T>, Option<String>)> {
    let start = match cursor {
        None => 0,
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| ServiceError::InvalidArgument(format!("bad cursor `{c}`")))?,
    };
    let end = items.len().min(start.saturating_add(limit as usize));
    let slice = items.get(start..end).unwrap_or_default();
    let next = (end < items.len()).then(|| end.to_string());
    Ok((slice.iter().map(|v| (*v).clone()).collect(), next))
}

#[async_trait]
impl HostServices for FixtureServices {
    async fn get_customer(&self, tenant: &TenantId, id: &str) -> ServiceResult<Option<Customer>> {
        Ok(self
            .tenant(tenant)
            .and_then(|t| t.customers.iter().find(|c| c.id == id).cloned()))
    }

    async fn get_customer_by_external_id(
        &self,
        tenant: &TenantId,
        external_id: &str,
    ) -> ServiceResult<Option<Customer>> {
        Ok(self
            .tenant(tenant)
            .and_then(|t| t.customers.iter().find(|c| c.external_id == external_id).cloned()))
    }

    async fn list_customers(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<customers::CustomerPage> {
        let mut all: Vec<&Customer> = self
            .tenant(tenant)
            .map(|t| t.customers.iter().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let (items, next_cursor) = page(all, cursor, limit)?;
        Ok(customers::CustomerPage { items, next_cursor })
    }

    async fn list_interactions(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<interactions::InteractionPage> {
        let mut all: Vec<&Interaction> = self
            .tenant(tenant)
            .map(|t| t.interactions.iter().filter(|i| i.customer_id == customer_id).collect())
            .unwrap_or_default();
        all.sort_by(|a, b| b.occurred_at.cmp(&a.occurred_at).then_with(|| b.id.cmp(&a.id)));
        let (items, next_cursor) = page(all, cursor, limit)?;
        Ok(interactions::InteractionPage { items, next_cursor })
    }

    async fn get_account(&self, tenant: &TenantId, customer_id: &str) -> ServiceResult<Option<LoyaltyAccount>> {
        Ok(self
            .tenant(tenant)
            .and_then(|t| t.accounts.iter().find(|a| a.customer_id == customer_id).cloned()))
    }

    async fn list_ledger(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<loyalty::LedgerPage> {
        let mut all: Vec<&LedgerEntry> = self
            .tenant(tenant)
            .and_then(|t| t.ledger.get(customer_id))
            .map(|entries| entries.iter().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        let (items, next_cursor) = page(all, cursor, limit)?;
        Ok(loyalty::LedgerPage { items, next_cursor })
    }

    async fn list_tiers(&self, tenant: &TenantId) -> ServiceResult<Vec<Tier>> {
        let mut tiers = self.tenant(tenant).map(|t| t.tiers.clone()).unwrap_or_default();
        tiers.sort_by_key(|t| t.rank);
        Ok(tiers)
    }

    async fn list_rewards(&self, tenant: &TenantId) -> ServiceResult<Vec<Reward>> {
        Ok(self.tenant(tenant).map(|t| t.rewards.clone()).unwrap_or_default())
    }

    async fn get_product(&self, tenant: &TenantId, sku: &str) -> ServiceResult<Option<Product>> {
        Ok(self
            .tenant(tenant)
            .and_then(|t| t.products.iter().find(|p| p.sku == sku).cloned()))
    }

    async fn list_products(
        &self,
        tenant: &TenantId,
        category: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<catalog::ProductPage> {
        let mut all: Vec<&Product> = self
            .tenant(tenant)
            .map(|t| {
                t.products
                    .iter()
                    .filter(|p| category.is_none() || p.category.as_deref() == category)
                    .collect()
            })
            .unwrap_or_default();
        all.sort_by(|a, b| a.sku.cmp(&b.sku));
        let (items, next_cursor) = page(all, cursor, limit)?;
        Ok(catalog::ProductPage { items, next_cursor })
    }

    async fn kv_get(&self, tenant: &TenantId, plugin_id: &str, key: &str) -> ServiceResult<Option<Vec<u8>>> {
        Ok(self
            .lock_kv()
            .get(&(tenant.clone(), plugin_id.to_owned()))
            .and_then(|m| m.get(key).cloned()))
    }

    async fn kv_set(
        &self,
        tenant: &TenantId,
        plugin_id: &str,
        key: &str,
        value: &[u8],
        max_bytes: u64,
    ) -> ServiceResult<()> {
        let mut kv = self.lock_kv();
        let map = kv.entry((tenant.clone(), plugin_id.to_owned())).or_default();
        let used: u64 = map
            .iter()
            .filter(|(k, _)| k.as_str() != key)
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        let needed = used + (key.len() + value.len()) as u64;
        if needed > max_bytes {
            return Err(ServiceError::QuotaExceeded(format!(
                "key-value store would hold {needed} bytes, over the {max_bytes}-byte limit"
            )));
        }
        map.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn kv_delete(&self, tenant: &TenantId, plugin_id: &str, key: &str) -> ServiceResult<()> {
        if let Some(map) = self.lock_kv().get_mut(&(tenant.clone(), plugin_id.to_owned())) {
            map.remove(key);
        }
        Ok(())
    }

    async fn kv_list_keys(
        &self,
        tenant: &TenantId,
        plugin_id: &str,
        prefix: &str,
        limit: u32,
    ) -> ServiceResult<Vec<String>> {
        Ok(self
            .lock_kv()
            .get(&(tenant.clone(), plugin_id.to_owned()))
            .map(|m| {
                m.keys()
                    .filter(|k| k.starts_with(prefix))
                    .take(limit as usize)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}
