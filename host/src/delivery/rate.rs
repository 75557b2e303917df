//! Rate limits of outbound deliveries: one token bucket (`governor`) per
//! tenant (`[[tenant]] message_rate_per_second`) and one per connector
//! (`[plugin.delivery] rate_per_second`, all tenants together). A worker
//! takes a permit from each before calling the connector.
//!
//! Buckets live in this process: with several nodes, each node allows the
//! configured rate, so the cluster-wide rate is up to nodes × rate.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Tenant(String),
    Connector(String),
}

/// The buckets, created on first use and replaced when the manifest
/// changes a rate.
#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<Scope, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl RateLimits {
    fn bucket(&self, scope: Scope, rate: u32) -> Arc<DefaultDirectRateLimiter> {
        // A panic while holding the lock leaves the map consistent (single
        // inserts), so a poisoned lock is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((r, limiter)) = buckets.get(&scope)
            && *r == rate
        {
            return limiter.clone();
        }
        let per_second = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        let limiter = Arc::new(RateLimiter::direct(Quota::per_second(per_second)));
        buckets.insert(scope, (rate, limiter.clone()));
        limiter
    }

    /// Waits until both the tenant's and the connector's bucket (those that
    /// have a rate) grant a permit.
    pub async fn wait(&self, tenant: &str, tenant_rate: Option<u32>, connector: &str, connector_rate: Option<u32>) {
        if let Some(rate) = tenant_rate {
            self.bucket(Scope::Tenant(tenant.to_string()), rate).until_ready().await;
        }
        if let Some(rate) = connector_rate {
            self.bucket(Scope::Connector(connector.to_string()), rate)
                .until_ready()
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bucket_grants_its_burst_then_throttles() {
        let limits = RateLimits::default();
        // A burst of `rate` permits is immediate...
        for _ in 0..5 {
            let b = limits.bucket(Scope::Tenant("t".into()), 5);
            assert!(b.check().is_ok());
        }
        // ...the next one is not.
        assert!(limits.bucket(Scope::Tenant("t".into()), 5).check().is_err());
        // Other tenants and connectors have buckets of their own.
        assert!(limits.bucket(Scope::Tenant("u".into()), 5).check().is_ok());
        assert!(limits.bucket(Scope::Connector("t".into()), 5).check().is_ok());
        // A changed rate replaces the bucket.
        assert!(limits.bucket(Scope::Tenant("t".into()), 6).check().is_ok());
    }
}
