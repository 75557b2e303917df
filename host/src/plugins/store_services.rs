//! [`HostServices`] over the real database store: what a plugin's granted
//! capabilities read and write when it runs inside the server.
//!
//! Every method takes the tenant the runtime holds in its host state and
//! goes through the same tenant-scoped store functions the HTTP API uses, so
//! an id of another tenant's record reads as "not found" here exactly as it
//! does over HTTP. "Not found" from the store becomes `None` or an empty
//! page; any other store failure becomes `ServiceError::Unavailable` (the
//! guest sees `host-error::unavailable`, or a trap where the contract has no
//! error channel), never a silent "none".

use async_trait::async_trait;

use crate::runtime::contract::rapport::crm::{catalog, customers, interactions, loyalty};
use crate::runtime::contract::types;
use crate::runtime::{HostServices, ServiceError};
use crate::store::customers::{Customer, CustomerFilter};
use crate::store::interactions::{Interaction, TimelineFilter};
use crate::store::loyalty::{LedgerEntry, LedgerKind};
use crate::store::money::Money;
use crate::store::products::{Product, ProductFilter};
use crate::store::{Store, StoreError, TenantId, millis};

type ServiceResult<T> = Result<T, ServiceError>;

pub struct StoreServices {
    store: Store,
}

impl StoreServices {
    pub fn new(store: Store) -> StoreServices {
        StoreServices { store }
    }
}

/// Store errors as the guest may see them. Invalid arguments (a bad cursor)
/// are the guest's to fix; anything else is the host's problem, logged here
/// with its cause and reported to the guest without internals.
fn service_error(err: StoreError) -> ServiceError {
    match err {
        StoreError::Invalid { field, message } => ServiceError::InvalidArgument(format!("{field}: {message}")),
        StoreError::Conflict {
            code: "kv_quota_exceeded",
            message,
        } => ServiceError::QuotaExceeded(message),
        other => {
            tracing::warn!(error = %other, "store failure behind a plugin host call");
            ServiceError::Unavailable("the host could not read its data".into())
        }
    }
}

/// `Ok(None)` for "not found", so lookups map naturally onto `option<T>`.
fn found<T>(result: Result<T, StoreError>) -> ServiceResult<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(err) => Err(service_error(err)),
    }
}

pub fn customer_to_guest(c: Customer) -> types::Customer {
    types::Customer {
        id: c.id,
        external_id: c.external_id,
        name: c.name,
        email: c.email,
        phone: c.phone,
        attributes: c.attributes.to_string(),
        created_at: millis(c.created_at),
    }
}

fn money_to_guest(m: Money) -> types::Money {
    types::Money {
        currency: m.currency,
        amount_minor: m.amount_minor,
    }
}

pub fn interaction_to_guest(i: Interaction) -> types::Interaction {
    types::Interaction {
        id: i.id,
        customer_id: i.customer_id,
        kind: i.kind,
        channel: i.channel,
        occurred_at: millis(i.occurred_at),
        amount: i.amount.map(money_to_guest),
        items: i
            .items
            .into_iter()
            .map(|item| types::LineItem {
                sku: item.sku,
                quantity: item.quantity,
                unit_price: money_to_guest(item.unit_price),
            })
            .collect(),
        payload: i.payload.to_string(),
    }
}

fn product_to_guest(p: Product) -> types::Product {
    types::Product {
        sku: p.sku,
        name: p.name,
        category: p.category,
        price: money_to_guest(p.price),
        attributes: p.attributes.to_string(),
    }
}

fn ledger_to_guest(e: LedgerEntry) -> types::LedgerEntry {
    types::LedgerEntry {
        id: e.id,
        kind: match e.kind {
            LedgerKind::Earn => types::LedgerKind::Earn,
            LedgerKind::Redeem => types::LedgerKind::Redeem,
            LedgerKind::Expire => types::LedgerKind::Expire,
            LedgerKind::Adjust => types::LedgerKind::Adjust,
        },
        points: e.points,
        reason: e.reason,
        expires_at: e.expires_at.map(millis),
        created_at: millis(e.created_at),
    }
}

#[async_trait]
impl HostServices for StoreServices {
    async fn get_customer(&self, tenant: &TenantId, id: &str) -> ServiceResult<Option<types::Customer>> {
        Ok(found(self.store.get_customer(tenant, id).await)?.map(customer_to_guest))
    }

    async fn get_customer_by_external_id(
        &self,
        tenant: &TenantId,
        external_id: &str,
    ) -> ServiceResult<Option<types::Customer>> {
        Ok(found(self.store.get_customer_by_external_id(tenant, external_id).await)?.map(customer_to_guest))
    }

    async fn list_customers(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<customers::CustomerPage> {
        let filter = CustomerFilter {
            limit: Some(limit),
            cursor: cursor.map(str::to_owned),
            ..Default::default()
        };
        let page = self.store.list_customers(tenant, filter).await.map_err(service_error)?;
        Ok(customers::CustomerPage {
            items: page.items.into_iter().map(customer_to_guest).collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn list_interactions(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<interactions::InteractionPage> {
        let filter = TimelineFilter {
            limit: Some(limit),
            cursor: cursor.map(str::to_owned),
            ..Default::default()
        };
        let page = match self.store.customer_timeline(tenant, customer_id, filter).await {
            Err(StoreError::NotFound { .. }) => {
                return Ok(interactions::InteractionPage {
                    items: Vec::new(),
                    next_cursor: None,
                });
            }
            other => other.map_err(service_error)?,
        };
        Ok(interactions::InteractionPage {
            items: page.items.into_iter().map(interaction_to_guest).collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn get_account(&self, tenant: &TenantId, customer_id: &str) -> ServiceResult<Option<types::LoyaltyAccount>> {
        Ok(
            found(self.store.get_account(tenant, customer_id).await)?.map(|a| types::LoyaltyAccount {
                customer_id: a.customer_id,
                balance: a.balance,
                lifetime_earned: a.lifetime_earned,
                tier_id: a.tier.map(|t| t.id),
            }),
        )
    }

    async fn list_ledger(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<loyalty::LedgerPage> {
        let page = match self.store.list_ledger(tenant, customer_id, limit, cursor).await {
            Err(StoreError::NotFound { .. }) => {
                return Ok(loyalty::LedgerPage {
                    items: Vec::new(),
                    next_cursor: None,
                });
            }
            other => other.map_err(service_error)?,
        };
        Ok(loyalty::LedgerPage {
            items: page.items.into_iter().map(ledger_to_guest).collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn list_tiers(&self, tenant: &TenantId) -> ServiceResult<Vec<types::Tier>> {
        let tiers = self.store.list_tiers(tenant).await.map_err(service_error)?;
        Ok(tiers
            .into_iter()
            .map(|t| types::Tier {
                id: t.id,
                name: t.name,
                rank: t.rank,
                min_points: t.min_points,
            })
            .collect())
    }

    async fn list_rewards(&self, tenant: &TenantId) -> ServiceResult<Vec<types::Reward>> {
        // Only what can be redeemed at all: inactive rewards are the
        // tenant's drafts, not something a scheme should offer.
        let rewards = self
            .store
            .list_rewards(tenant, Some(true))
            .await
            .map_err(service_error)?;
        Ok(rewards
            .into_iter()
            .map(|r| types::Reward {
                id: r.id,
                name: r.name,
                cost_points: r.cost_points,
                min_tier_rank: r.min_tier_rank,
                stock: r.stock,
            })
            .collect())
    }

    async fn get_product(&self, tenant: &TenantId, sku: &str) -> ServiceResult<Option<types::Product>> {
        Ok(found(self.store.get_product(tenant, sku).await)?.map(product_to_guest))
    }

    async fn list_products(
        &self,
        tenant: &TenantId,
        category: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<catalog::ProductPage> {
        let filter = ProductFilter {
            category: category.map(str::to_owned),
            limit: Some(limit),
            cursor: cursor.map(str::to_owned),
        };
        let page = self.store.list_products(tenant, filter).await.map_err(service_error)?;
        Ok(catalog::ProductPage {
            items: page.items.into_iter().map(product_to_guest).collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn kv_get(&self, tenant: &TenantId, plugin_id: &str, key: &str) -> ServiceResult<Option<Vec<u8>>> {
        self.store.kv_get(tenant, plugin_id, key).await.map_err(service_error)
    }

    async fn kv_set(
        &self,
        tenant: &TenantId,
        plugin_id: &str,
        key: &str,
        value: &[u8],
        max_bytes: u64,
    ) -> ServiceResult<()> {
        self.store
            .kv_set(tenant, plugin_id, key, value, max_bytes)
            .await
            .map_err(service_error)
    }

    async fn kv_delete(&self, tenant: &TenantId, plugin_id: &str, key: &str) -> ServiceResult<()> {
        self.store
            .kv_delete(tenant, plugin_id, key)
            .await
            .map(|_| ())
            .map_err(service_error)
    }

    async fn kv_list_keys(
        &self,
        tenant: &TenantId,
        plugin_id: &str,
        prefix: &str,
        limit: u32,
    ) -> ServiceResult<Vec<String>> {
        self.store
            .kv_list(tenant, plugin_id, prefix, None, i64::from(limit))
            .await
            .map_err(service_error)
    }
}
