//! Reward-scheme plugins on the ingest path, and `redeemable`.
//!
//! Every interaction an ingest *creates* (single or batch) is shown to each
//! of the tenant's active reward-scheme plugins (`on-interaction`), in
//! manifest order. Their answers (earn / adjust intents and a tier change)
//! are validated by the host and applied with
//! [`apply_ledger_ops_tx`](crate::store::loyalty::apply_ledger_ops_tx) in the
//! **same transaction** as the interaction (in a batch: inside the item's
//! savepoint), so the interaction and its reward effects commit together or
//! not at all.
//!
//! Exactly once. Each intent's ledger entry carries the idempotency key
//! `reward:<interaction id>:<plugin>:<n>` ([`reward_key`]), which the
//! ledger's unique constraint makes impossible to apply twice. On top of
//! that, a replayed ingest (same idempotency key and body) never runs the
//! plugins again: it reports, with status `replayed`, the entries the first
//! ingest wrote (tier changes and failures of the first ingest are not
//! repeated in a replay's report).
//!
//! What a plugin sees (`interaction-context`) is read inside the ingest
//! transaction: the interaction as stored, the account after locking it
//! (created at zero if missing, due expiry swept, so it cannot change under
//! the plugin's feet), the tenant's tiers, the rolling 12-month purchase
//! spend in the interaction's currency *including* this interaction (see
//! [`rolling_spend_tx`](crate::store::interactions::rolling_spend_tx)), and
//! the host's now. The second plugin sees the account as the first one left
//! it. Host capabilities a plugin calls during `on-interaction` read through
//! the pool, i.e. committed data: they do not see this transaction. On
//! SQLite its key-value *writes* (`kv.set`, `kv.delete`) are refused with
//! `host-error::unavailable`: they would need the write lock this very
//! ingest holds, and would wait for it until the plugin timed out. Reward
//! plugins are best stateless on the ingest path (first-party
//! `tiered-points` is); on PostgreSQL kv writes work as everywhere else.
//!
//! Trade-off: reading and applying in one transaction means the transaction
//! stays open while the plugins run. On SQLite that is the database's single
//! write lock, so every other writer of the database waits for the plugin
//! calls (each bounded by the plugin's `timeout_ms`, and a batch holds it for
//! all its items); on PostgreSQL it is the account's row lock (and those of
//! the rows the ingest wrote), so only writers of the same customers wait.
//! We accept this: correct points (no double award, no award against
//! a stale balance, no interaction without its points) matter more than
//! write throughput, and reward plugins are meant to be small and fast.
//! Plugins are compiled *before* the transaction starts, so a first-use
//! compilation never happens under the lock.
//!
//! Failures. A plugin that traps, times out, returns an error or returns
//! intents the host refuses (earn with points <= 0, an adjust that would take
//! the balance below zero, an unknown tier, an expiry in the past, too many
//! intents) never costs the interaction: it is stored, that plugin's effects
//! are rolled back as a whole (its own savepoint), its entry in the response
//! says `failed` with the error, and misbehaviour (a trap, a timeout,
//! refused intents) counts towards the plugin's suspension for the tenant
//! like any other plugin call; a typed `plugin-error` returned on purpose
//! (code `plugin_<kind>`) is reported but not counted. Failures and
//! successes are recorded in the plugin state *after* the ingest commits:
//! recording them from another connection while the SQLite write lock is
//! held would wait on ourselves. So within one batch a failing plugin keeps
//! running for the remaining items; all its failures count, and it is
//! suspended once the batch has committed.
//!
//! Retry. A failed plugin's effect is not re-applied automatically, neither
//! by a replayed ingest (which would otherwise award points long after the
//! fact whenever a client retried) nor later. An admin re-runs one plugin on
//! one interaction explicitly ([`PluginService::retry_rewards`],
//! `POST /v1/interactions/{id}/rewards/retry`), e.g. after fixing its config
//! or resuming it: in a transaction of its own, with the same context as an
//! ingest (the account as it is *now*) and the same deterministic keys, so
//! it applies at most once; it is refused (409 `rewards_already_applied`)
//! when the plugin already wrote entries for that interaction. Operators can
//! also correct an account with a manual ledger `adjust`.
//!
//! `redeemable`: the active rewards the host's own rules allow (cost within
//! the balance, tier rank, stock: what redemption enforces anyway),
//! intersected with the answer of every reward plugin that answered. A
//! plugin that fails is reported and left out; when every plugin fails,
//! nothing is redeemable (the scheme's rules cannot be checked, so we fail
//! closed). Without reward plugins the host's rules alone decide.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::store_services::interaction_to_guest;
use super::{PluginFailure, PluginService, call_failure, failure};
use crate::db::Backend;
use crate::manifest::PluginKind;
use crate::manifest::effective::EffectivePlugin;
use crate::runtime::contract::rapport::crm::{catalog, customers, interactions, loyalty};
use crate::runtime::contract::rewards::{InteractionContext, LedgerIntent, RewardOutcome};
use crate::runtime::contract::types;
use crate::runtime::{CallContext, CallError, HostServices, Plugin, ServiceError};
use crate::store::interactions::{
    HookedIngest, IngestHook, IngestOutcome, Interaction, NewInteraction, RewardAccount, RewardTierChange,
    apply_reward_ops_tx, lock_reward_account_tx, reward_account_tx, reward_entries_tx, reward_key, reward_tiers_tx,
    rolling_spend_tx,
};
use crate::store::loyalty::{Account, LedgerEntry, LedgerOp, Reward, Tier};
use crate::store::{StoreError, StoreResult, TenantId, now_ms};

/// Most ledger intents one plugin may return for one interaction: a reward
/// rule needs a handful; hundreds would be a bug (or an attack on the lock).
pub const MAX_INTENTS: usize = 32;

/// What became of one plugin's `on-interaction` for one interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RewardStatus {
    /// It ran and everything it asked for was applied (possibly nothing).
    Applied,
    /// The ingest was a replay: these are the entries the first ingest wrote.
    Replayed,
    /// It failed or asked for something the host refused: nothing applied.
    Failed,
}

/// One plugin's effect on one interaction, as the ingest response reports it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RewardRun {
    pub plugin: String,
    pub status: RewardStatus,
    /// The ledger entries written (or, on a replay, written back then).
    pub entries: Vec<LedgerEntry>,
    /// The tier change applied, if the plugin changed the tier.
    pub tier_change: Option<RewardTierChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<PluginFailure>,
    /// Whether the failure counts towards suspension: misbehaviour (trap,
    /// timeout, refused intents) does; a typed `plugin-error` the plugin
    /// returned on purpose is an answer and does not (as for every plugin
    /// call, see `PluginService::run`).
    #[serde(skip)]
    pub counts_as_failure: bool,
}

impl RewardRun {
    fn failed(plugin: &str, error: PluginFailure) -> RewardRun {
        RewardRun {
            plugin: plugin.to_string(),
            status: RewardStatus::Failed,
            entries: Vec::new(),
            tier_change: None,
            error: Some(error),
            counts_as_failure: true,
        }
    }
}

/// One reward plugin's part in `redeemable`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RedeemableRun {
    pub plugin: String,
    /// `ok` or `error`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<PluginFailure>,
}

/// The rewards a customer may redeem now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Redeemable {
    pub customer_id: String,
    pub balance: i64,
    /// Cheapest first (the catalogue's order).
    pub rewards: Vec<Reward>,
    /// Each active reward plugin's outcome; empty when the host's rules alone decided.
    pub plugins: Vec<RedeemableRun>,
}

/// A reward plugin ready to run: compiled before the transaction starts (or
/// the reason it could not be, reported for every interaction).
struct ReadyPlugin {
    plugin: EffectivePlugin,
    loaded: Result<Arc<Plugin>, PluginFailure>,
}

/// The [`IngestHook`] that runs the reward plugins inside the ingest.
struct RewardHook {
    plugins: Vec<ReadyPlugin>,
    /// What the plugins' capabilities run against during the ingest.
    services: Arc<dyn HostServices>,
}

/// The capabilities of a reward plugin inside a SQLite ingest: everything
/// reads as usual; kv writes are refused (see the module doc) instead of
/// waiting for the write lock their own ingest holds.
struct NoKvWrites(Arc<dyn HostServices>);

fn kv_write_refused() -> ServiceError {
    ServiceError::Unavailable(
        "kv writes are not available during on-interaction on this database: the ingest holds its write lock".into(),
    )
}

#[async_trait]
impl HostServices for NoKvWrites {
    async fn get_customer(&self, t: &TenantId, id: &str) -> Result<Option<types::Customer>, ServiceError> {
        self.0.get_customer(t, id).await
    }
    async fn get_customer_by_external_id(
        &self,
        t: &TenantId,
        external_id: &str,
    ) -> Result<Option<types::Customer>, ServiceError> {
        self.0.get_customer_by_external_id(t, external_id).await
    }
    async fn list_customers(
        &self,
        t: &TenantId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<customers::CustomerPage, ServiceError> {
        self.0.list_customers(t, cursor, limit).await
    }
    async fn list_interactions(
        &self,
        t: &TenantId,
        customer_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<interactions::InteractionPage, ServiceError> {
        self.0.list_interactions(t, customer_id, cursor, limit).await
    }
    async fn get_account(
        &self,
        t: &TenantId,
        customer_id: &str,
    ) -> Result<Option<types::LoyaltyAccount>, ServiceError> {
        self.0.get_account(t, customer_id).await
    }
    async fn list_ledger(
        &self,
        t: &TenantId,
        customer_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<loyalty::LedgerPage, ServiceError> {
        self.0.list_ledger(t, customer_id, cursor, limit).await
    }
    async fn list_tiers(&self, t: &TenantId) -> Result<Vec<types::Tier>, ServiceError> {
        self.0.list_tiers(t).await
    }
    async fn list_rewards(&self, t: &TenantId) -> Result<Vec<types::Reward>, ServiceError> {
        self.0.list_rewards(t).await
    }
    async fn get_product(&self, t: &TenantId, sku: &str) -> Result<Option<types::Product>, ServiceError> {
        self.0.get_product(t, sku).await
    }
    async fn list_products(
        &self,
        t: &TenantId,
        category: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<catalog::ProductPage, ServiceError> {
        self.0.list_products(t, category, cursor, limit).await
    }
    async fn kv_get(&self, t: &TenantId, plugin_id: &str, key: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        self.0.kv_get(t, plugin_id, key).await
    }
    async fn kv_set(
        &self,
        _t: &TenantId,
        _plugin_id: &str,
        _key: &str,
        _value: &[u8],
        _max_bytes: u64,
    ) -> Result<(), ServiceError> {
        Err(kv_write_refused())
    }
    async fn kv_delete(&self, _t: &TenantId, _plugin_id: &str, _key: &str) -> Result<(), ServiceError> {
        Err(kv_write_refused())
    }
    async fn kv_list_keys(
        &self,
        t: &TenantId,
        plugin_id: &str,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, ServiceError> {
        self.0.kv_list_keys(t, plugin_id, prefix, limit).await
    }
}

fn account_to_guest(a: &RewardAccount) -> types::LoyaltyAccount {
    types::LoyaltyAccount {
        customer_id: a.customer_id.clone(),
        balance: a.balance,
        lifetime_earned: a.lifetime_earned,
        tier_id: a.tier_id.clone(),
    }
}

fn tier_to_guest(t: &Tier) -> types::Tier {
    types::Tier {
        id: t.id.clone(),
        name: t.name.clone(),
        rank: t.rank,
        min_points: t.min_points,
    }
}

fn reward_to_guest(r: &Reward) -> types::Reward {
    types::Reward {
        id: r.id.clone(),
        name: r.name.clone(),
        cost_points: r.cost_points,
        min_tier_rank: r.min_tier_rank,
        stock: r.stock,
    }
}

/// A plugin's outcome as ledger operations with their deterministic keys,
/// or why it is refused before touching the ledger.
fn outcome_to_ops(interaction_id: &str, plugin: &str, outcome: RewardOutcome) -> Result<Vec<LedgerOp>, PluginFailure> {
    if outcome.ledger.len() > MAX_INTENTS {
        return Err(failure(
            "plugin_invalid_intent",
            format!(
                "{} ledger intents; at most {MAX_INTENTS} per interaction",
                outcome.ledger.len()
            ),
        ));
    }
    let mut ops = Vec::with_capacity(outcome.ledger.len() + 1);
    for (n, intent) in outcome.ledger.into_iter().enumerate() {
        let idempotency_key = Some(reward_key(interaction_id, plugin, n));
        ops.push(match intent {
            LedgerIntent::Earn(e) => {
                if e.points <= 0 {
                    return Err(failure(
                        "plugin_invalid_intent",
                        format!("ledger[{n}]: earn of {} points; earn must be greater than 0", e.points),
                    ));
                }
                LedgerOp::Earn {
                    points: e.points,
                    reason: e.reason,
                    expires_at: e.expires_at,
                    idempotency_key,
                }
            }
            LedgerIntent::Adjust(a) => {
                if a.points == 0 {
                    return Err(failure(
                        "plugin_invalid_intent",
                        format!("ledger[{n}]: adjust of 0 points"),
                    ));
                }
                LedgerOp::Adjust {
                    points: a.points,
                    reason: a.reason,
                    idempotency_key,
                }
            }
        });
    }
    if let Some(change) = outcome.tier_change {
        ops.push(LedgerOp::SetTier {
            tier_id: change.tier_id,
            reason: change.reason,
        });
    }
    Ok(ops)
}

/// Why the store refused a plugin's operations, as the response reports it.
fn refusal(err: &StoreError) -> PluginFailure {
    let message = match err {
        StoreError::NotFound { entity } => format!("unknown {entity}"),
        StoreError::Conflict { code, message } => format!("{code}: {message}"),
        other => other.to_string(),
    };
    failure("plugin_invalid_intent", message)
}

impl RewardHook {
    /// Runs one plugin on one interaction and applies its answer (all or
    /// nothing). Only a database failure is an `Err`.
    async fn run_one(
        &self,
        conn: &mut AnyConnection,
        t: &TenantId,
        interaction: &Interaction,
        ready: &ReadyPlugin,
        context: &InteractionContext,
    ) -> StoreResult<RewardRun> {
        let id = ready.plugin.id.as_str();
        let loaded = match &ready.loaded {
            Ok(loaded) => loaded,
            Err(fail) => {
                // A load failure is the operator's, not the plugin's doing.
                let mut run = RewardRun::failed(id, fail.clone());
                run.counts_as_failure = false;
                return Ok(run);
            }
        };
        let ctx = CallContext {
            tenant: t.clone(),
            config_json: ready.plugin.config.to_string(),
            services: self.services.clone(),
        };
        let (result, _report) = loaded.on_interaction(ctx, context).await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(CallError::Guest(kind, message)) => {
                let mut run = RewardRun::failed(id, failure(&format!("plugin_{kind}"), message));
                run.counts_as_failure = false;
                return Ok(run);
            }
            Err(err) => {
                let mut run = RewardRun::failed(id, call_failure(&err));
                run.counts_as_failure = err.counts_toward_suspension();
                return Ok(run);
            }
        };
        let ops = match outcome_to_ops(&interaction.id, id, outcome) {
            Ok(ops) => ops,
            Err(fail) => return Ok(RewardRun::failed(id, fail)),
        };
        if ops.is_empty() {
            return Ok(RewardRun {
                plugin: id.to_string(),
                status: RewardStatus::Applied,
                entries: Vec::new(),
                tier_change: None,
                error: None,
                counts_as_failure: false,
            });
        }
        Ok(match apply_reward_ops_tx(conn, t, interaction, &ops).await? {
            Ok(applied) => RewardRun {
                plugin: id.to_string(),
                status: RewardStatus::Applied,
                entries: applied.entries,
                tier_change: applied.tier_change,
                error: None,
                counts_as_failure: false,
            },
            Err(refused) => RewardRun::failed(id, refusal(&refused)),
        })
    }
}

impl IngestHook for RewardHook {
    type Output = Vec<RewardRun>;

    async fn after_ingest(
        &self,
        conn: &mut AnyConnection,
        t: &TenantId,
        interaction: &Interaction,
        outcome: IngestOutcome,
    ) -> StoreResult<Vec<RewardRun>> {
        if outcome == IngestOutcome::Replayed {
            // Never run the plugins again: report what the first ingest wrote.
            let mut runs: Vec<RewardRun> = Vec::new();
            for (plugin, entry) in reward_entries_tx(conn, t, &interaction.id).await? {
                match runs.iter_mut().find(|r| r.plugin == plugin) {
                    Some(run) => run.entries.push(entry),
                    None => runs.push(RewardRun {
                        plugin,
                        status: RewardStatus::Replayed,
                        entries: vec![entry],
                        tier_change: None,
                        error: None,
                        counts_as_failure: false,
                    }),
                }
            }
            return Ok(runs);
        }
        if self.plugins.is_empty() {
            return Ok(Vec::new());
        }
        let account = lock_reward_account_tx(conn, t, &interaction.customer_id).await?;
        let tiers = reward_tiers_tx(conn, t).await?;
        let rolling_spend_minor = rolling_spend_tx(conn, t, interaction).await?;
        let mut context = InteractionContext {
            interaction: interaction_to_guest(interaction.clone()),
            account: account_to_guest(&account),
            tiers: tiers.iter().map(tier_to_guest).collect(),
            rolling_spend_minor,
            now: now_ms(),
        };
        let mut runs = Vec::with_capacity(self.plugins.len());
        for ready in &self.plugins {
            let run = self.run_one(conn, t, interaction, ready, &context).await?;
            let changed = !run.entries.is_empty() || run.tier_change.is_some();
            runs.push(run);
            if changed {
                // The next plugin sees the account as this one left it.
                context.account = account_to_guest(&reward_account_tx(conn, t, &interaction.customer_id).await?);
            }
        }
        Ok(runs)
    }
}

impl PluginService {
    /// The tenant's active reward plugins, compiled (outside any transaction).
    async fn reward_hook(&self, t: &TenantId) -> StoreResult<RewardHook> {
        let mut plugins = Vec::new();
        for plugin in self.active(t, PluginKind::RewardScheme).await? {
            let loaded = self.load(&plugin.id).await;
            plugins.push(ReadyPlugin { plugin, loaded });
        }
        Ok(self.reward_hook_for(plugins))
    }

    /// A hook running `plugins`, with the capabilities an ingest allows.
    fn reward_hook_for(&self, plugins: Vec<ReadyPlugin>) -> RewardHook {
        let services: Arc<dyn HostServices> = self.services.clone();
        let services = match self.store.db().backend() {
            Backend::Sqlite => Arc::new(NoKvWrites(services)),
            Backend::Postgres => services,
        };
        RewardHook { plugins, services }
    }

    /// Counts the committed ingest's plugin failures and successes, in the
    /// order they happened, towards each plugin's suspension.
    async fn record_reward_runs<'r>(&self, t: &TenantId, hook: &RewardHook, runs: impl Iterator<Item = &'r RewardRun>) {
        // Consecutive failures as the database has them, updated as we go, so
        // that a success after failures resets the count.
        let mut failures: HashMap<&str, i64> = hook
            .plugins
            .iter()
            .map(|r| (r.plugin.id.as_str(), r.plugin.consecutive_failures))
            .collect();
        for run in runs {
            let Some(ready) = hook.plugins.iter().find(|r| r.plugin.id == run.plugin) else {
                continue; // a replay of a plugin no longer active
            };
            let count = failures.entry(ready.plugin.id.as_str()).or_default();
            match (&run.status, &run.error) {
                (RewardStatus::Failed, Some(fail)) if run.counts_as_failure => {
                    self.record_failure(t, &ready.plugin, fail).await;
                    *count += 1;
                }
                (RewardStatus::Applied, _) if *count > 0 => {
                    if let Err(e) = self.store.record_plugin_success(t, &ready.plugin.id).await {
                        tracing::warn!(plugin = %ready.plugin.id, error = %e, "could not record plugin success");
                    }
                    *count = 0;
                }
                _ => {}
            }
        }
    }

    /// Ingests one interaction and runs the tenant's reward plugins on it in
    /// the same transaction (see the module doc).
    pub async fn ingest_with_rewards(
        &self,
        t: &TenantId,
        new: NewInteraction,
    ) -> StoreResult<HookedIngest<Vec<RewardRun>>> {
        let hook = self.reward_hook(t).await?;
        let done = self.store.ingest_interaction_with(t, new, &hook).await?;
        self.record_reward_runs(t, &hook, done.2.iter()).await;
        Ok(done)
    }

    /// A batch ingest with the reward plugins run inside each item's
    /// savepoint; a plugin failure never fails its item.
    pub async fn ingest_batch_with_rewards(
        &self,
        t: &TenantId,
        items: Vec<NewInteraction>,
    ) -> StoreResult<Vec<Result<HookedIngest<Vec<RewardRun>>, StoreError>>> {
        let hook = self.reward_hook(t).await?;
        let results = self.store.ingest_batch_with(t, items, &hook).await?;
        let runs = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|(_, _, runs)| runs.iter());
        self.record_reward_runs(t, &hook, runs).await;
        Ok(results)
    }

    /// Re-runs the reward plugin `plugin` on the stored interaction
    /// `interaction_id` (see "Retry" in the module doc). The plugin must be
    /// an active reward-scheme plugin of the tenant (404 / 409
    /// `plugin_not_active` otherwise).
    pub async fn retry_rewards(&self, t: &TenantId, interaction_id: &str, plugin: &str) -> StoreResult<RewardRun> {
        let mut selected = self.selected(t, PluginKind::RewardScheme, Some(plugin)).await?;
        let Some(plugin) = selected.pop() else {
            return Err(StoreError::NotFound { entity: "plugin" });
        };
        let id = plugin.id.clone();
        let loaded = self.load(&id).await;
        let hook = self.reward_hook_for(vec![ReadyPlugin { plugin, loaded }]);
        let runs = self.store.rerun_rewards_with(t, interaction_id, &id, &hook).await?;
        self.record_reward_runs(t, &hook, runs.iter()).await;
        runs.into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt("a reward re-run produced no outcome".into()))
    }

    /// The rewards `customer_id` may redeem now (see the module doc).
    pub async fn redeemable(&self, t: &TenantId, customer_id: &str) -> StoreResult<Redeemable> {
        let account = self.store.get_account(t, customer_id).await?;
        let tiers = self.store.list_tiers(t).await?;
        let rewards = self.store.list_rewards(t, Some(true)).await?;
        let rank = account.tier.as_ref().map(|tier| tier.rank);
        let allowed: Vec<Reward> = rewards.into_iter().filter(|r| host_allows(&account, rank, r)).collect();

        let plugins = self.active(t, PluginKind::RewardScheme).await?;
        if plugins.is_empty() {
            return Ok(Redeemable {
                customer_id: account.customer_id,
                balance: account.balance,
                rewards: allowed,
                plugins: Vec::new(),
            });
        }
        let guest_account = types::LoyaltyAccount {
            customer_id: account.customer_id.clone(),
            balance: account.balance,
            lifetime_earned: account.lifetime_earned,
            tier_id: account.tier.as_ref().map(|tier| tier.id.clone()),
        };
        let guest_tiers: Vec<types::Tier> = tiers.iter().map(tier_to_guest).collect();
        let guest_rewards: Vec<types::Reward> = allowed.iter().map(reward_to_guest).collect();
        let mut keep: Option<BTreeSet<String>> = None;
        let mut reports = Vec::with_capacity(plugins.len());
        for plugin in &plugins {
            let (account, tiers, rewards) = (&guest_account, &guest_tiers, &guest_rewards);
            let run = self
                .run(t, plugin, |p, ctx| async move {
                    p.redeemable(ctx, account, tiers, rewards).await
                })
                .await;
            match run.result {
                Ok(ids) => {
                    let ids: BTreeSet<String> = ids.into_iter().collect();
                    keep = Some(match keep {
                        None => ids,
                        Some(kept) => kept.intersection(&ids).cloned().collect(),
                    });
                    reports.push(RedeemableRun {
                        plugin: run.plugin,
                        status: "ok",
                        error: None,
                    });
                }
                Err(fail) => reports.push(RedeemableRun {
                    plugin: run.plugin,
                    status: "error",
                    error: Some(fail),
                }),
            }
        }
        // Every plugin failed: fail closed.
        let keep = keep.unwrap_or_default();
        Ok(Redeemable {
            customer_id: account.customer_id,
            balance: account.balance,
            rewards: allowed.into_iter().filter(|r| keep.contains(&r.id)).collect(),
            plugins: reports,
        })
    }
}

/// The rules redemption itself enforces: active, affordable, in stock, and
/// the account's tier rank at least the reward's minimum.
fn host_allows(account: &Account, rank: Option<i64>, reward: &Reward) -> bool {
    reward.active
        && reward.cost_points <= account.balance
        && reward.stock.is_none_or(|s| s > 0)
        && reward.min_tier_rank.is_none_or(|min| rank.is_some_and(|r| r >= min))
}
