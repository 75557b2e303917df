//! Simulations: a plugin version run against the tenant's recorded history
//! next to the active version, writing nothing (`POST
//! /v1/plugins/{id}/simulate`, `rapport plugin simulate`).
//!
//! Nothing is written because nothing goes through the paths that write:
//! the plugins are called directly (no failure counting, no stored scores,
//! no fit recorded), and their capabilities are a read-only view of the
//! store ([`ReadOnly`]: a key-value write fails inside the plugin, which
//! then answers as it does when its storage is unavailable). The only row a
//! simulation writes is its own job row (`store::simulations`), which is
//! how a long one reports progress to every node.
//!
//! Scoring plugins: every customer (or the first `sample`, in id order) is
//! scored by both versions on the same history; the report gives each
//! version's score distribution and segments and how many customers would
//! change segment. Cross-sell plugins: both versions recommend for each
//! customer; the report gives the overlap of their recommendations. Reward
//! schemes are not simulated yet (see the README).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::scoring::{BATCH_SIZE, history_to_guest};
use super::{MAX_HISTORY, PluginService};
use crate::manifest::PluginKind;
use crate::runtime::contract::inputs::CustomerHistory;
use crate::runtime::contract_v0_1_0::rapport::crm::catalog::ProductPage;
use crate::runtime::contract_v0_1_0::rapport::crm::customers::CustomerPage;
use crate::runtime::contract_v0_1_0::rapport::crm::interactions::InteractionPage;
use crate::runtime::contract_v0_1_0::rapport::crm::loyalty::LedgerPage;
use crate::runtime::contract_v0_1_0::types::{Customer, LoyaltyAccount, Product, Reward, Tier};
use crate::runtime::services::{ServiceError, ServiceResult};
use crate::runtime::{CallContext, HostServices, Plugin};
use crate::store::simulations::Simulation;
use crate::store::{StoreError, StoreResult, TenantId, now_ms};

/// Cross-sell recommendations asked per customer and version.
const RECOMMEND_LIMIT: u32 = 10;
/// Customers a simulation runs at most when no sample is given.
pub const MAX_SIMULATED_CUSTOMERS: i64 = 1_000_000;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulationSpec {
    pub plugin: String,
    pub version: String,
    /// At most this many customers (in id order).
    pub sample: Option<i64>,
    /// Replay history as of this time (epoch ms): later interactions are left out.
    pub as_of: Option<i64>,
}

/// The store's capabilities with every write refused.
struct ReadOnly(Arc<dyn HostServices>);

fn refused() -> ServiceError {
    ServiceError::Unavailable("a simulation writes nothing".into())
}

#[async_trait]
impl HostServices for ReadOnly {
    async fn get_customer(&self, t: &TenantId, id: &str) -> ServiceResult<Option<Customer>> {
        self.0.get_customer(t, id).await
    }
    async fn get_customer_by_external_id(&self, t: &TenantId, id: &str) -> ServiceResult<Option<Customer>> {
        self.0.get_customer_by_external_id(t, id).await
    }
    async fn list_customers(&self, t: &TenantId, cursor: Option<&str>, limit: u32) -> ServiceResult<CustomerPage> {
        self.0.list_customers(t, cursor, limit).await
    }
    async fn list_interactions(
        &self,
        t: &TenantId,
        customer: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<InteractionPage> {
        self.0.list_interactions(t, customer, cursor, limit).await
    }
    async fn get_account(&self, t: &TenantId, customer: &str) -> ServiceResult<Option<LoyaltyAccount>> {
        self.0.get_account(t, customer).await
    }
    async fn list_ledger(
        &self,
        t: &TenantId,
        customer: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<LedgerPage> {
        self.0.list_ledger(t, customer, cursor, limit).await
    }
    async fn list_tiers(&self, t: &TenantId) -> ServiceResult<Vec<Tier>> {
        self.0.list_tiers(t).await
    }
    async fn list_rewards(&self, t: &TenantId) -> ServiceResult<Vec<Reward>> {
        self.0.list_rewards(t).await
    }
    async fn get_product(&self, t: &TenantId, sku: &str) -> ServiceResult<Option<Product>> {
        self.0.get_product(t, sku).await
    }
    async fn list_products(
        &self,
        t: &TenantId,
        category: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<ProductPage> {
        self.0.list_products(t, category, cursor, limit).await
    }
    async fn kv_get(&self, t: &TenantId, plugin: &str, key: &str) -> ServiceResult<Option<Vec<u8>>> {
        self.0.kv_get(t, plugin, key).await
    }
    async fn kv_set(&self, _: &TenantId, _: &str, _: &str, _: &[u8], _: u64) -> ServiceResult<()> {
        Err(refused())
    }
    async fn kv_delete(&self, _: &TenantId, _: &str, _: &str) -> ServiceResult<()> {
        Err(refused())
    }
    async fn kv_list_keys(&self, t: &TenantId, plugin: &str, prefix: &str, limit: u32) -> ServiceResult<Vec<String>> {
        self.0.kv_list_keys(t, plugin, prefix, limit).await
    }
}

/// One version's scores over the simulated customers.
#[derive(Default)]
struct ScoreTally {
    values: Vec<f64>,
    failed: i64,
    segments: BTreeMap<String, i64>,
}

impl ScoreTally {
    fn report(mut self) -> Value {
        self.values.sort_by(f64::total_cmp);
        let n = self.values.len();
        let quantile = |q: f64| -> Option<f64> {
            if n == 0 {
                return None;
            }
            let i = ((n - 1) as f64 * q).round() as usize;
            self.values.get(i).copied()
        };
        let mean = (n > 0).then(|| self.values.iter().sum::<f64>() / n as f64);
        json!({
            "scored": n,
            "failed": self.failed,
            "min": quantile(0.0), "p10": quantile(0.1), "p25": quantile(0.25), "median": quantile(0.5),
            "p75": quantile(0.75), "p90": quantile(0.9), "max": quantile(1.0), "mean": mean,
            "segments": self.segments,
        })
    }
}

fn segment_name(segment: Option<&str>) -> String {
    segment.filter(|s| !s.trim().is_empty()).unwrap_or("(none)").to_owned()
}

impl PluginService {
    /// Starts a simulation: checks the plugin and version, creates its job
    /// row and runs it in the background. 404 for a plugin the tenant does
    /// not have; 422 `unknown_version` / `simulation_not_supported`.
    pub async fn start_simulation(
        self: &Arc<Self>,
        tenant: &TenantId,
        spec: SimulationSpec,
    ) -> StoreResult<Simulation> {
        let plugin = self
            .find(tenant, &spec.plugin)
            .await?
            .ok_or(StoreError::NotFound { entity: "plugin" })?;
        if !matches!(plugin.kind, PluginKind::ScoringRule | PluginKind::CrossSell) {
            return Err(StoreError::Unprocessable {
                code: "simulation_not_supported",
                field: "plugin".into(),
                message: format!(
                    "{} plugins cannot be simulated yet (scoring and cross-sell can)",
                    plugin.kind
                ),
            });
        }
        let versions = self.available_versions(tenant, &spec.plugin).await?;
        if !versions.iter().any(|v| v.version == spec.version) {
            return Err(StoreError::Unprocessable {
                code: "unknown_version",
                field: "version".into(),
                message: format!(
                    "`{}` has no version {:?} available to this tenant",
                    spec.plugin, spec.version
                ),
            });
        }
        let baseline = self
            .version_pick(tenant, &spec.plugin)
            .await
            .map_err(|f| StoreError::conflict("plugin_unavailable", f.message))?
            .active;
        let request = json!({ "sample": spec.sample, "as_of": spec.as_of });
        let sim = self
            .store
            .create_simulation(tenant, &spec.plugin, &spec.version, &baseline, &request)
            .await?;
        let service = self.clone();
        let (tenant, id) = (tenant.clone(), sim.id.clone());
        let config = plugin.config.to_string();
        let kind = plugin.kind;
        tokio::spawn(async move {
            let outcome = service.simulate(&tenant, &id, &spec, &baseline, kind, config).await;
            let finished = match &outcome {
                Ok(report) => service.store.finish_simulation(&tenant, &id, Ok(report)).await,
                Err(message) => service.store.finish_simulation(&tenant, &id, Err(message)).await,
            };
            if let Err(e) = finished {
                tracing::error!(tenant = %tenant, simulation = %id, error = %e, "cannot record a simulation's end");
            }
        });
        Ok(sim)
    }

    /// The simulation's body: its report, or why it failed.
    async fn simulate(
        &self,
        tenant: &TenantId,
        id: &str,
        spec: &SimulationSpec,
        baseline: &str,
        kind: PluginKind,
        config: String,
    ) -> Result<Value, String> {
        let load = |version: String| async move {
            self.load_version(tenant, &spec.plugin, &version)
                .await
                .map_err(|f| format!("version {version}: {}", f.message))
        };
        let candidate = load(spec.version.clone()).await?;
        let active = load(baseline.to_owned()).await?;
        let services: Arc<dyn HostServices> = Arc::new(ReadOnly(self.services.clone()));
        let ctx = || CallContext {
            tenant: tenant.clone(),
            config_json: config.clone(),
            services: services.clone(),
        };
        let total_customers = self.store.count_customers(tenant).await.map_err(|e| e.to_string())?;
        let limit = spec.sample.unwrap_or(MAX_SIMULATED_CUSTOMERS).min(total_customers);
        let read_at = now_ms();
        let now = spec.as_of.unwrap_or(read_at);
        let mut after: Option<String> = None;
        let mut done = 0i64;
        let mut scoring = (
            ScoreTally::default(),
            ScoreTally::default(),
            0i64,
            BTreeMap::<String, i64>::new(),
        );
        let mut cross = (0i64, 0f64, 0i64, 0i64);
        while done < limit {
            let want = usize::try_from((limit - done).min(BATCH_SIZE as i64)).unwrap_or(BATCH_SIZE);
            let page = self
                .store
                .scoring_histories_page(tenant, after.as_deref(), want, MAX_HISTORY)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last() else { break };
            after = Some(last.customer.id.clone());
            let n = page.len() as i64;
            let inputs: Vec<CustomerHistory> = page.into_iter().map(|h| history_to_guest(h, now, spec.as_of)).collect();
            match kind {
                PluginKind::CrossSell => {
                    self.simulate_recommend(&candidate, &active, &ctx, &inputs, &mut cross)
                        .await?
                }
                _ => simulate_scores(&candidate, &active, &ctx, &inputs, &mut scoring).await?,
            }
            done += n;
            if let Err(e) = self.store.simulation_progress(tenant, id, done, limit).await {
                tracing::warn!(tenant = %tenant, simulation = %id, error = %e, "cannot record simulation progress");
            }
        }
        Ok(match kind {
            PluginKind::CrossSell => {
                let (customers, jaccard, identical_top, failed) = cross;
                json!({
                    "kind": "cross-sell",
                    "customers": customers,
                    "failed": failed,
                    "mean_overlap": if customers > 0 { Some(jaccard / customers as f64) } else { None },
                    "same_top_recommendation": identical_top,
                })
            }
            _ => {
                let (cand, act, changed, transitions) = scoring;
                json!({
                    "kind": "scoring-rule",
                    "customers": done,
                    "candidate": cand.report(),
                    "active": act.report(),
                    "segment_changes": changed,
                    "transitions": transitions,
                })
            }
        })
    }

    async fn simulate_recommend(
        &self,
        candidate: &Arc<Plugin>,
        active: &Arc<Plugin>,
        ctx: &impl Fn() -> CallContext,
        inputs: &[CustomerHistory],
        tally: &mut (i64, f64, i64, i64),
    ) -> Result<(), String> {
        use crate::runtime::contract::cross_selling::RecommendRequest;
        for history in inputs {
            let request = RecommendRequest {
                history: history.clone(),
                basket: None,
                limit: RECOMMEND_LIMIT,
            };
            let (a, _) = candidate.recommend(ctx(), &request).await;
            let (b, _) = active.recommend(ctx(), &request).await;
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    let sa: HashSet<&str> = a.iter().map(|r| r.sku.as_str()).collect();
                    let sb: HashSet<&str> = b.iter().map(|r| r.sku.as_str()).collect();
                    let union = sa.union(&sb).count();
                    let overlap = if union == 0 {
                        1.0
                    } else {
                        sa.intersection(&sb).count() as f64 / union as f64
                    };
                    tally.0 += 1;
                    tally.1 += overlap;
                    if a.first().map(|r| &r.sku) == b.first().map(|r| &r.sku) {
                        tally.2 += 1;
                    }
                }
                _ => tally.3 += 1,
            }
        }
        Ok(())
    }
}

/// Scores one page with both versions and adds it to the tallies.
async fn simulate_scores(
    candidate: &Arc<Plugin>,
    active: &Arc<Plugin>,
    ctx: &impl Fn() -> CallContext,
    inputs: &[CustomerHistory],
    tally: &mut (ScoreTally, ScoreTally, i64, BTreeMap<String, i64>),
) -> Result<(), String> {
    let (a, _) = candidate.score_batch(ctx(), inputs).await;
    let a = a.map_err(|e| format!("the simulated version failed: {e}"))?;
    let (b, _) = active.score_batch(ctx(), inputs).await;
    let b = b.map_err(|e| format!("the active version failed: {e}"))?;
    for (a, b) in a.into_iter().zip(b) {
        let seg_a = a.as_ref().ok().map(|s| segment_name(s.segment.as_deref()));
        let seg_b = b.as_ref().ok().map(|s| segment_name(s.segment.as_deref()));
        for (result, seg, t) in [(&a, &seg_a, &mut tally.0), (&b, &seg_b, &mut tally.1)] {
            match (result, seg) {
                (Ok(score), Some(seg)) => {
                    t.values.push(score.value);
                    *t.segments.entry(seg.clone()).or_default() += 1;
                }
                _ => t.failed += 1,
            }
        }
        if let (Some(from), Some(to)) = (seg_b, seg_a)
            && from != to
        {
            tally.2 += 1;
            *tally.3.entry(format!("{from} -> {to}")).or_default() += 1;
        }
    }
    Ok(())
}
