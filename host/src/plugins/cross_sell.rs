//! Fitting cross-sell plugins: every active cross-sell plugin of a tenant
//! learns from the tenant's purchase baskets (the distinct SKUs of each
//! purchase) and keeps its model in its own key-value store, which its
//! `recommend` calls read.
//!
//! Run on demand (`POST /v1/cross-sell/fit`, `rapport score` runs it too):
//! association rules change slowly, and a fit reads every basket. Each
//! fit's outcome is recorded, so `GET /v1/plugins/{id}/fit` shows it with
//! the model the plugin kept.
//!
//! A plugin's recommendations are checked against the tenant's catalogue
//! before anyone sees them ([`PluginService::drop_unknown_skus`]): a model
//! fitted on old baskets, or a plugin that is simply wrong, must not send a
//! client to a product that does not exist.

use super::{PluginRun, PluginService};
use crate::manifest::PluginKind;
use crate::runtime::contract::cross_selling::Recommendation;
use crate::runtime::{LogLevel, LogLine};
use crate::store::{StoreResult, TenantId};

/// Counter of recommendations dropped because their SKU is not in the
/// tenant's catalogue, labelled `plugin`.
pub const UNKNOWN_SKU_METRIC: &str = "rapport_plugin_unknown_skus_total";

/// How many dropped SKUs a call's log note names.
const NOTED_SKUS: usize = 20;

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

    /// Removes from each run the recommendations of SKUs the tenant's
    /// catalogue does not hold, counting them in [`UNKNOWN_SKU_METRIC`] and
    /// noting each in the run's log lines (what `GET
    /// /v1/customers/{id}/recommendations` shows as the call's `logs`).
    pub async fn drop_unknown_skus(
        &self,
        tenant: &TenantId,
        runs: &mut [PluginRun<Vec<Recommendation>>],
    ) -> StoreResult<()> {
        let mut skus: Vec<String> = runs
            .iter()
            .filter_map(|run| run.result.as_ref().ok())
            .flatten()
            .map(|r| r.sku.clone())
            .collect();
        skus.sort_unstable();
        skus.dedup();
        let known = self.store.known_skus(tenant, &skus).await?;
        for run in runs.iter_mut() {
            let Ok(recommendations) = run.result.as_mut() else {
                continue;
            };
            let before = recommendations.len();
            let mut dropped = Vec::new();
            recommendations.retain(|r| {
                let keep = known.contains(&r.sku);
                if !keep {
                    dropped.push(r.sku.clone());
                }
                keep
            });
            if dropped.is_empty() {
                continue;
            }
            metrics::counter!(UNKNOWN_SKU_METRIC, "plugin" => run.plugin.clone()).increment(dropped.len() as u64);
            tracing::warn!(
                tenant = %tenant,
                plugin = %run.plugin,
                dropped = dropped.len(),
                of = before,
                "dropped recommendations of SKUs not in the catalogue"
            );
            // One note per call, after the plugin's own lines and outside
            // its log cap (it is the host's, not the plugin's output), naming
            // at most NOTED_SKUS of them so a plugin cannot inflate it.
            let count = dropped.len();
            dropped.truncate(NOTED_SKUS);
            run.report.logs.push(LogLine {
                level: LogLevel::Warn,
                message: "host: recommendations of SKUs not in the catalogue were dropped".into(),
                fields: vec![("count".into(), count.to_string()), ("skus".into(), dropped.join(","))],
            });
        }
        Ok(())
    }
}
