//! Admission of plugin calls into the instance pool: who may hold how many
//! instances at once.
//!
//! The pooling allocator has a fixed number of instance slots shared by
//! every tenant. Without shares, one tenant's flood of slow calls took them
//! all and other tenants' calls failed to instantiate. [`CallAdmission`]
//! hands out a [`Permit`] per live instance, from three nested shares:
//! per (tenant, plugin), per tenant, and a global bound kept below the pool
//! size (the rest is reserved for load-time type checks), so instantiation
//! never meets the pool's own limit. A call beyond its shares waits, within
//! its own deadline, and then fails with [`super::CallError::Busy`] for that
//! tenant only; nothing about the pool's size reaches the tenant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::store::TenantId;

/// How the instance pool is shared. Every value is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Instances all tenants together may hold (calls in flight plus live
    /// sessions); below the pool size.
    pub max_concurrent_calls: u32,
    /// Instances one tenant may hold, all its plugins together.
    pub max_concurrent_calls_per_tenant: u32,
    /// Instances one tenant may hold of one plugin, so a flood of one
    /// plugin leaves room for the tenant's others.
    pub max_concurrent_calls_per_plugin: u32,
}

impl AdmissionConfig {
    /// Shares for a pool of `max_instances` slots: a few slots are kept for
    /// load-time checks, and one tenant gets an eighth of the rest, at most
    /// 4, half of that per plugin. Measured (README, flood benchmark): each
    /// spinning guest takes its turn on the executor the HTTP handlers
    /// share, so more concurrent guests than cores only queue for the CPU
    /// that other tenants' requests need.
    pub fn for_pool(max_instances: u32) -> AdmissionConfig {
        let global = max_instances.saturating_sub(reserved_slots(max_instances)).max(1);
        let per_tenant = (global / 8).clamp(1, 4);
        AdmissionConfig {
            max_concurrent_calls: global,
            max_concurrent_calls_per_tenant: per_tenant,
            max_concurrent_calls_per_plugin: (per_tenant / 2).max(1),
        }
    }

    /// Checks the shares against a pool of `max_instances` slots.
    pub fn check(&self, max_instances: u32) -> Result<(), String> {
        let AdmissionConfig {
            max_concurrent_calls: global,
            max_concurrent_calls_per_tenant: tenant,
            max_concurrent_calls_per_plugin: plugin,
        } = *self;
        if global == 0 || tenant == 0 || plugin == 0 {
            return Err("concurrency shares must be at least 1".into());
        }
        let room = max_instances.saturating_sub(reserved_slots(max_instances));
        if global > room {
            return Err(format!(
                "max_concurrent_calls {global} leaves no room below the pool of {max_instances} instances \
                 (at most {room})"
            ));
        }
        Ok(())
    }
}

/// Pool slots never handed to calls: load-time type checks instantiate
/// outside admission.
fn reserved_slots(max_instances: u32) -> u32 {
    (max_instances / 16).clamp(1, 16).min(max_instances.saturating_sub(1))
}

/// Why a permit was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The caller's own share (tenant or plugin) stayed full.
    Share,
    /// Every tenant together filled the global bound.
    Global,
}

/// One share per key (a tenant, or a tenant's plugin), made on first use.
type Shares<K> = Mutex<HashMap<K, Arc<Semaphore>>>;

/// The gate every instantiation goes through (one per [`super::Runtime`]).
pub(crate) struct CallAdmission {
    config: AdmissionConfig,
    global: Arc<Semaphore>,
    tenants: Shares<TenantId>,
    plugins: Shares<(TenantId, Arc<str>)>,
}

/// Held for as long as an instance lives; dropping it frees the shares.
pub(crate) struct Permit {
    // Field order is drop order: the global slot is returned last, after
    // the shares, so a waiter of the same tenant cannot overtake the pool.
    _plugin: OwnedSemaphorePermit,
    _tenant: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl CallAdmission {
    pub fn new(config: AdmissionConfig) -> CallAdmission {
        CallAdmission {
            config,
            global: Arc::new(Semaphore::new(config.max_concurrent_calls as usize)),
            tenants: Mutex::new(HashMap::new()),
            plugins: Mutex::new(HashMap::new()),
        }
    }

    /// Waits at most `wait` for a permit of `tenant` for `plugin`. The
    /// shares are taken first, the global slot last, so a tenant waiting
    /// on its own share never holds a global slot meanwhile.
    pub async fn acquire(&self, tenant: &TenantId, plugin: &Arc<str>, wait: Duration) -> Result<Permit, Refused> {
        let deadline = tokio::time::Instant::now() + wait;
        let plugin_share = self.plugin_share(tenant, plugin);
        let tenant_share = self.tenant_share(tenant);
        let take = |sem: Arc<Semaphore>| async move {
            match tokio::time::timeout_at(deadline, sem.acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                // Closed never happens (the semaphores are never closed).
                _ => None,
            }
        };
        let p = take(plugin_share).await.ok_or(Refused::Share)?;
        let t = take(tenant_share).await.ok_or(Refused::Share)?;
        let g = take(self.global.clone()).await.ok_or(Refused::Global)?;
        Ok(Permit {
            _plugin: p,
            _tenant: t,
            _global: g,
        })
    }

    /// Instances in use now, all tenants together.
    pub fn in_use(&self) -> usize {
        (self.config.max_concurrent_calls as usize).saturating_sub(self.global.available_permits())
    }

    fn tenant_share(&self, tenant: &TenantId) -> Arc<Semaphore> {
        let mut map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        share(&mut map, tenant, self.config.max_concurrent_calls_per_tenant)
    }

    fn plugin_share(&self, tenant: &TenantId, plugin: &Arc<str>) -> Arc<Semaphore> {
        let mut map = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.clone(), plugin.clone());
        share(&mut map, &key, self.config.max_concurrent_calls_per_plugin)
    }
}

/// The semaphore of `key`, created on first use. Idle entries (nobody
/// holds or waits for a permit) are dropped when the map grows, so tenants
/// that stopped calling cost nothing.
fn share<K: Clone + Eq + std::hash::Hash>(map: &mut HashMap<K, Arc<Semaphore>>, key: &K, size: u32) -> Arc<Semaphore> {
    if let Some(sem) = map.get(key) {
        return sem.clone();
    }
    if map.len() >= 1024 {
        map.retain(|_, sem| Arc::strong_count(sem) > 1 || sem.available_permits() < size as usize);
    }
    let sem = Arc::new(Semaphore::new(size as usize));
    map.insert(key.clone(), sem.clone());
    sem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(global: u32, tenant: u32, plugin: u32) -> AdmissionConfig {
        AdmissionConfig {
            max_concurrent_calls: global,
            max_concurrent_calls_per_tenant: tenant,
            max_concurrent_calls_per_plugin: plugin,
        }
    }

    #[test]
    fn defaults_fit_the_pool() {
        let c = AdmissionConfig::for_pool(256);
        assert_eq!(c, config(240, 4, 2));
        assert!(c.check(256).is_ok());
        assert!(config(256, 4, 2).check(256).is_err());
        assert!(config(10, 0, 4).check(256).is_err());
        let tiny = AdmissionConfig::for_pool(2);
        assert_eq!(tiny, config(1, 1, 1));
        assert!(tiny.check(2).is_ok());
    }

    #[tokio::test]
    async fn a_full_share_refuses_only_its_tenant() {
        let gate = CallAdmission::new(config(4, 2, 2));
        let (a, b) = (TenantId::for_tests("a"), TenantId::for_tests("b"));
        let p: Arc<str> = "p".into();
        let wait = Duration::from_millis(20);
        let held = [
            gate.acquire(&a, &p, wait).await.unwrap(),
            gate.acquire(&a, &p, wait).await.unwrap(),
        ];
        assert_eq!(gate.acquire(&a, &p, wait).await.err(), Some(Refused::Share));
        let other = gate.acquire(&b, &p, wait).await.unwrap();
        assert_eq!(gate.in_use(), 3);
        drop(held);
        assert!(gate.acquire(&a, &p, wait).await.is_ok());
        drop(other);
    }

    #[tokio::test]
    async fn a_full_pool_refuses_as_global() {
        let gate = CallAdmission::new(config(2, 2, 2));
        let p: Arc<str> = "p".into();
        let wait = Duration::from_millis(20);
        let _a = gate.acquire(&TenantId::for_tests("a"), &p, wait).await.unwrap();
        let _b = gate.acquire(&TenantId::for_tests("b"), &p, wait).await.unwrap();
        assert_eq!(
            gate.acquire(&TenantId::for_tests("c"), &p, wait).await.err(),
            Some(Refused::Global)
        );
    }
}
