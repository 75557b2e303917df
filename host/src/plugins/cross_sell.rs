//! Fitting cross-sell plugins: every active cross-sell plugin of a tenant
//! learns from the tenant's purchase baskets (the distinct SKUs of each
//! purchase) and keeps its model in its own key-value store, which its
//! `recommend` calls read.
//!
//! Run on demand (`POST /v1/cross-sell/fit`): association rules change
//! slowly, and a fit reads every basket. Each fit's outcome is recorded, so
//! `GET /v1/plugins/{id}/fit` shows it with the model the plugin kept.

use super::{PluginRun, PluginService};
use crate::manifest::PluginKind;
use crate::store::{StoreResult, TenantId};

impl PluginService {
    /// Fits the tenant's active cross-sell plugins (or just `only`) on its
    /// purchase baskets; each run's result is the plugin's JSON summary.
    pub async fn fit_cross_sell(&self, tenant: &TenantId, only: Option<&str>) -> StoreResult<Vec<PluginRun<String>>> {
        let plugins = self.selected(tenant, PluginKind::CrossSell, only).await?;
        if plugins.is_empty() {
            return Ok(Vec::new());
        }
        let baskets = self.store.purchase_baskets(tenant).await?;
        let mut runs = Vec::with_capacity(plugins.len());
        for plugin in &plugins {
            let baskets = &baskets;
            let run = self
                .run(
                    tenant,
                    plugin,
                    |p, ctx| async move { p.fit_baskets(ctx, baskets).await },
                )
                .await;
            // Kept for `GET /v1/plugins/{id}/fit`, beside the model the
            // plugin stored in its kv.
            self.record_fit(tenant, &run, None, None).await;
            runs.push(run);
        }
        Ok(runs)
    }
}
