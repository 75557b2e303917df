//! Reward-scheme plugins on the ingest path, and `redeemable`.
//!
//! The plugins run on a read snapshot *before* the ingest's write
//! transaction, so a slow or looping plugin never holds the database's
//! write lock (on SQLite: every tenant's writes); their intents are applied
//! inside it only if what they were shown still holds, else the ingest runs
//! them again. Why each step is needed: ARCHITECTURE.md ("Reward schemes");
//! the rules a client sees (exactly once, failures, retries): README.md
//! ("Reward plugins").

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::store_services::interaction_to_guest;
use super::{PluginFailure, PluginService, call_failure, failure};
use crate::manifest::PluginKind;
use crate::manifest::effective::EffectivePlugin;
use crate::runtime::contract::rewards::{InteractionContext, LedgerIntent, RewardOutcome};
use crate::runtime::contract::types;
use crate::runtime::{CallContext, CallError, Plugin};
use crate::store::interactions::{
    Assigned, HookedIngest, IngestHook, IngestOutcome, Interaction, NewInteraction, SNAPSHOT_STALE, is_stale,
};
use crate::store::loyalty::{
    Account, LedgerEntry, LedgerOp, ROLLING_SPEND_WINDOW_MS, Reward, RewardAccount, RewardSnapshot, RewardTierChange,
    Tier, apply_reward_ops_tx, lock_reward_account_tx, predict_reward_ops, reward_account_tx, reward_entries_tx,
    reward_key, reward_tiers_tx, rolling_spend_tx,
};
use crate::store::{StoreError, StoreResult, TenantId, millis, now_ms};

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

/// Attempts of one ingest when the account changes while its reward
/// plugins run: each attempt runs them again on a fresh snapshot.
pub const MAX_ATTEMPTS: u32 = 3;

/// Counter of ingests rolled back and retried because a reward plugin's
/// snapshot went stale.
pub const STALE_METRIC: &str = "rapport_reward_snapshot_retries_total";

/// This node's reward ingests, queued per customer while their plugins run
/// (see the module doc). Only ingests of one tenant's same customer wait
/// for each other; nothing here touches the database's locks.
#[derive(Default)]
pub struct CustomerLocks {
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl CustomerLocks {
    /// Takes the locks of every customer `items` name, in key order (so two
    /// batches naming the same customers cannot deadlock).
    async fn lock(&self, tenant: &TenantId, items: &[NewInteraction]) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let keys: BTreeSet<String> = items
            .iter()
            .map(|new| match (&new.customer_id, &new.customer_external_id) {
                (Some(id), _) => format!("{tenant}\0id\0{id}"),
                (None, Some(external)) => format!("{tenant}\0ext\0{external}"),
                (None, None) => format!("{tenant}\0none"),
            })
            .collect();
        let mut guards = Vec::with_capacity(keys.len());
        for key in keys {
            let lock = {
                let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
                if locks.len() > 4096 {
                    // Forget the locks nobody holds or waits for.
                    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
                }
                locks.entry(key).or_default().clone()
            };
            guards.push(lock.lock_owned().await);
        }
        guards
    }
}

/// A reward plugin ready to run: compiled before anything else (or the
/// reason it could not be, reported for every interaction).
struct ReadyPlugin {
    plugin: EffectivePlugin,
    loaded: Result<Arc<Plugin>, PluginFailure>,
}

/// What of a plugin's context its answer depends on and the ingest checks
/// again under the lock (the time aside).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    account: RewardAccount,
    tiers: Vec<(String, String, i64, i64)>,
    rolling_spend_minor: i64,
}

impl Seen {
    fn new(account: &RewardAccount, tiers: &[Tier], rolling_spend_minor: i64) -> Seen {
        Seen {
            account: account.clone(),
            tiers: tiers
                .iter()
                .map(|t| (t.id.clone(), t.name.clone(), t.rank, t.min_points))
                .collect(),
            rolling_spend_minor,
        }
    }
}

/// One plugin's answer for one interaction, computed before the write
/// transaction: the operations to apply, or its failure.
struct Planned {
    seen: Seen,
    answer: Result<Vec<LedgerOp>, RewardRun>,
}

/// The [`IngestHook`] that applies the reward plugins' planned answers.
struct RewardHook {
    plugins: Vec<ReadyPlugin>,
    /// Ids fixed in advance, by position in the ingest.
    assigned: Vec<Assigned>,
    /// Each planned interaction's answers, in plugin order.
    plans: HashMap<String, Vec<Planned>>,
    /// The last attempt applies what is still valid and reports the rest
    /// as conflicts instead of rolling back again.
    last_attempt: bool,
}

fn conflict_run(plugin: &str) -> RewardRun {
    let mut run = RewardRun::failed(
        plugin,
        failure(
            "plugin_conflict",
            format!(
                "the account changed while the plugin ran, {MAX_ATTEMPTS} times; nothing applied \
                 (re-run it with POST /v1/interactions/{{id}}/rewards/retry)"
            ),
        ),
    );
    run.counts_as_failure = false;
    run
}

impl RewardHook {
    /// Applies one plugin's operations (all or nothing). Only a database
    /// failure is an `Err`.
    async fn apply(
        conn: &mut AnyConnection,
        tenant: &TenantId,
        interaction: &Interaction,
        plugin: &str,
        ops: &[LedgerOp],
    ) -> StoreResult<RewardRun> {
        let applied = RewardRun {
            plugin: plugin.to_string(),
            status: RewardStatus::Applied,
            entries: Vec::new(),
            tier_change: None,
            error: None,
            counts_as_failure: false,
        };
        if ops.is_empty() {
            return Ok(applied);
        }
        Ok(match apply_reward_ops_tx(conn, tenant, interaction, ops).await? {
            Ok(done) => RewardRun {
                entries: done.entries,
                tier_change: done.tier_change,
                ..applied
            },
            Err(refused) => RewardRun::failed(plugin, refusal(&refused)),
        })
    }

    fn stale(&self, what: &str) -> StoreResult<Vec<RewardRun>> {
        if self.last_attempt {
            return Ok(self.plugins.iter().map(|r| conflict_run(&r.plugin.id)).collect());
        }
        Err(StoreError::conflict(SNAPSHOT_STALE, what.to_string()))
    }
}

impl IngestHook for RewardHook {
    type Output = Vec<RewardRun>;

    fn assigned(&self, index: usize) -> Option<Assigned> {
        self.assigned.get(index).cloned()
    }

    async fn after_ingest(
        &self,
        conn: &mut AnyConnection,
        tenant: &TenantId,
        interaction: &Interaction,
        outcome: IngestOutcome,
    ) -> StoreResult<Vec<RewardRun>> {
        if outcome == IngestOutcome::Replayed {
            // Never run the plugins again: report what the first ingest wrote.
            let mut runs: Vec<RewardRun> = Vec::new();
            for (plugin, entry) in reward_entries_tx(conn, tenant, &interaction.id).await? {
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
        let Some(plan) = self.plans.get(&interaction.id) else {
            // Created although the snapshot expected it not to be (a kind
            // or customer appeared meanwhile): plan again.
            return self.stale("the interaction was not planned");
        };
        // The context as the plugins would have seen it under the lock.
        let account = lock_reward_account_tx(conn, tenant, &interaction.customer_id).await?;
        let tiers = reward_tiers_tx(conn, tenant).await?;
        let rolling_spend_minor = rolling_spend_tx(conn, tenant, interaction).await?;
        let mut now = Seen::new(&account, &tiers, rolling_spend_minor);
        let mut runs = Vec::with_capacity(self.plugins.len());
        for (ready, planned) in self.plugins.iter().zip(plan) {
            let id = ready.plugin.id.as_str();
            let ops = match &planned.answer {
                Ok(ops) => ops,
                Err(run) => {
                    runs.push(run.clone());
                    continue;
                }
            };
            if planned.seen != now {
                if !self.last_attempt {
                    return Err(StoreError::conflict(
                        SNAPSHOT_STALE,
                        format!("the context of reward plugin `{id}` changed while it ran"),
                    ));
                }
                runs.push(conflict_run(id));
                continue;
            }
            let run = Self::apply(conn, tenant, interaction, id, ops).await?;
            if !run.entries.is_empty() || run.tier_change.is_some() {
                // The next plugin was shown the account as this one left it.
                now.account = reward_account_tx(conn, tenant, &interaction.customer_id).await?;
            }
            runs.push(run);
        }
        Ok(runs)
    }
}

/// A purchase of an earlier item of the same batch, for the rolling spend
/// of the customer's later items.
struct BatchPurchase {
    currency: String,
    occurred_at: i64,
    amount_minor: i64,
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

impl PluginService {
    /// The tenant's active reward plugins, compiled.
    async fn reward_plugins(&self, tenant: &TenantId) -> StoreResult<Vec<ReadyPlugin>> {
        let mut plugins = Vec::new();
        for plugin in self.active(tenant, PluginKind::RewardScheme).await? {
            let loaded = self.load_active(tenant, &plugin.id).await;
            plugins.push(ReadyPlugin { plugin, loaded });
        }
        Ok(plugins)
    }

    /// Runs one plugin on one interaction, outside any transaction: its
    /// operations with their deterministic keys, or its failure.
    async fn ask(
        &self,
        tenant: &TenantId,
        ready: &ReadyPlugin,
        interaction_id: &str,
        context: &InteractionContext,
    ) -> Result<Vec<LedgerOp>, RewardRun> {
        let id = ready.plugin.id.as_str();
        let loaded = match &ready.loaded {
            Ok(loaded) => loaded,
            Err(fail) => {
                // The artifact, not the plugin: never counted (see `loader`).
                let mut run = RewardRun::failed(id, fail.clone());
                run.counts_as_failure = false;
                return Err(run);
            }
        };
        let (config, secrets) = match self.call_config(tenant, &ready.plugin).await {
            Ok(resolved) => resolved,
            Err(fail) => {
                // The tenant's config, not the plugin: never counted.
                let mut run = RewardRun::failed(id, fail);
                run.counts_as_failure = false;
                return Err(run);
            }
        };
        let ctx = CallContext {
            tenant: tenant.clone(),
            config_json: config.to_string(),
            services: self.services.clone(),
        };
        let started_at_ms = crate::store::now_ms();
        let (mut result, mut report) = loaded.on_interaction(ctx, context).await;
        super::scrub_secrets(&secrets, &mut result, &mut report);
        let fail = match &result {
            Ok(_) => None,
            Err(CallError::Guest(kind, message)) => Some(failure(&format!("plugin_{kind}"), message.clone())),
            Err(err) => Some(call_failure(err)),
        };
        self.record_run(tenant, &ready.plugin, started_at_ms, &report, fail.as_ref());
        if let Err(CallError::Guest(crate::runtime::PluginErrorKind::InvalidConfig, message)) = &result {
            self.record_config_error(tenant, &ready.plugin, message).await;
        }
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(CallError::Guest(kind, message)) => {
                let mut run = RewardRun::failed(id, failure(&format!("plugin_{kind}"), message));
                run.counts_as_failure = false;
                return Err(run);
            }
            Err(err) => {
                // Only the plugin's own misbehaviour counts (never `Busy`,
                // instantiation): `counts_toward_suspension` is the one rule.
                let mut run = RewardRun::failed(id, call_failure(&err));
                run.counts_as_failure = err.counts_toward_suspension();
                return Err(run);
            }
        };
        outcome_to_ops(interaction_id, id, outcome).map_err(|fail| RewardRun::failed(id, fail))
    }

    /// Runs `plugins` on each snapshot, in order, before the write
    /// transaction. Each plugin is shown the account as the previous
    /// plugins (and the customer's earlier items of the batch) will have
    /// left it, predicted; the ingest checks every prediction.
    async fn plan(
        &self,
        tenant: &TenantId,
        plugins: &[ReadyPlugin],
        snapshots: Vec<Option<RewardSnapshot>>,
    ) -> HashMap<String, Vec<Planned>> {
        let mut plans = HashMap::new();
        if plugins.is_empty() {
            return plans;
        }
        let mut accounts: HashMap<String, RewardAccount> = HashMap::new();
        let mut purchases: HashMap<String, Vec<BatchPurchase>> = HashMap::new();
        for snap in snapshots.into_iter().flatten() {
            let interaction = &snap.interaction;
            let customer = interaction.customer_id.clone();
            let earlier = purchases.get(&customer).map(Vec::as_slice).unwrap_or_default();
            let end = millis(interaction.occurred_at);
            let currency = snap
                .spend_currency
                .clone()
                .or_else(|| earlier.iter().max_by_key(|p| p.occurred_at).map(|p| p.currency.clone()));
            let extra: i64 = earlier
                .iter()
                .filter(|p| {
                    Some(&p.currency) == currency.as_ref()
                        && p.occurred_at > end.saturating_sub(ROLLING_SPEND_WINDOW_MS)
                        && p.occurred_at <= end
                })
                .map(|p| p.amount_minor)
                .fold(0i64, i64::saturating_add);
            let spend = snap.rolling_spend_minor.saturating_add(extra);
            let mut account = accounts.remove(&customer).unwrap_or_else(|| snap.account.clone());
            let mut context = InteractionContext {
                interaction: interaction_to_guest(interaction.clone()),
                account: account_to_guest(&account),
                tiers: snap.tiers.iter().map(tier_to_guest).collect(),
                rolling_spend_minor: spend,
                now: now_ms(),
            };
            let mut planned = Vec::with_capacity(plugins.len());
            for ready in plugins {
                let seen = Seen::new(&account, &snap.tiers, spend);
                let answer = self.ask(tenant, ready, &interaction.id, &context).await;
                if let Ok(ops) = &answer {
                    account = predict_reward_ops(&account, &snap.tiers, ops, now_ms());
                    context.account = account_to_guest(&account);
                }
                planned.push(Planned { seen, answer });
            }
            accounts.insert(customer.clone(), account);
            if let (Some(money), "purchase") = (&interaction.amount, interaction.kind.as_str()) {
                purchases.entry(customer).or_default().push(BatchPurchase {
                    currency: money.currency.clone(),
                    occurred_at: end,
                    amount_minor: money.amount_minor,
                });
            }
            plans.insert(interaction.id.clone(), planned);
        }
        plans
    }

    /// Plans `items` (ids fixed in advance) for one attempt of an ingest.
    async fn planned_hook(
        &self,
        tenant: &TenantId,
        plugins: Vec<ReadyPlugin>,
        items: &[NewInteraction],
        last_attempt: bool,
    ) -> StoreResult<RewardHook> {
        let mut hook = RewardHook {
            plugins,
            assigned: Vec::new(),
            plans: HashMap::new(),
            last_attempt,
        };
        if !hook.plugins.is_empty() {
            hook.assigned = items.iter().map(|_| Assigned::new()).collect();
            let snapshots = self.store.reward_snapshots(tenant, items, &hook.assigned).await?;
            hook.plans = self.plan(tenant, &hook.plugins, snapshots).await;
        }
        Ok(hook)
    }

    /// Counts the committed ingest's plugin failures and successes, in the
    /// order they happened, towards each plugin's suspension.
    async fn record_reward_runs<'r>(
        &self,
        tenant: &TenantId,
        hook: &RewardHook,
        runs: impl Iterator<Item = &'r RewardRun>,
    ) {
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
                    self.record_failure(tenant, &ready.plugin, fail).await;
                    *count += 1;
                }
                (RewardStatus::Applied, _) if *count > 0 => {
                    if let Err(e) = self.store.record_plugin_success(tenant, &ready.plugin.id).await {
                        tracing::warn!(plugin = %ready.plugin.id, error = %e, "could not record plugin success");
                    }
                    *count = 0;
                }
                _ => {}
            }
        }
    }

    /// Ingests one interaction with the tenant's reward plugins' effects
    /// (see the module doc).
    pub async fn ingest_with_rewards(
        &self,
        tenant: &TenantId,
        new: NewInteraction,
    ) -> StoreResult<HookedIngest<Vec<RewardRun>>> {
        let _queued = self.reward_locks.lock(tenant, std::slice::from_ref(&new)).await;
        let mut attempt = 1;
        loop {
            let plugins = self.reward_plugins(tenant).await?;
            let hook = self
                .planned_hook(tenant, plugins, std::slice::from_ref(&new), attempt == MAX_ATTEMPTS)
                .await?;
            match self.store.ingest_interaction_with(tenant, new.clone(), &hook).await {
                Err(e) if is_stale(&e) && attempt < MAX_ATTEMPTS => {
                    metrics::counter!(STALE_METRIC).increment(1);
                    attempt += 1;
                }
                Err(e) => return Err(e),
                Ok(done) => {
                    self.record_reward_runs(tenant, &hook, done.2.iter()).await;
                    return Ok(done);
                }
            }
        }
    }

    /// A batch ingest with the reward plugins' effects applied inside each
    /// item's savepoint; a plugin failure never fails its item. A stale
    /// snapshot of any item retries the whole batch (one transaction).
    pub async fn ingest_batch_with_rewards(
        &self,
        tenant: &TenantId,
        items: Vec<NewInteraction>,
    ) -> StoreResult<Vec<Result<HookedIngest<Vec<RewardRun>>, StoreError>>> {
        let _queued = self.reward_locks.lock(tenant, &items).await;
        let mut attempt = 1;
        loop {
            let plugins = self.reward_plugins(tenant).await?;
            let hook = self
                .planned_hook(tenant, plugins, &items, attempt == MAX_ATTEMPTS)
                .await?;
            match self.store.ingest_batch_with(tenant, items.clone(), &hook).await {
                Err(e) if is_stale(&e) && attempt < MAX_ATTEMPTS => {
                    metrics::counter!(STALE_METRIC).increment(1);
                    attempt += 1;
                }
                Err(e) => return Err(e),
                Ok(results) => {
                    let runs = results
                        .iter()
                        .filter_map(|r| r.as_ref().ok())
                        .flat_map(|(_, _, runs)| runs.iter());
                    self.record_reward_runs(tenant, &hook, runs).await;
                    return Ok(results);
                }
            }
        }
    }

    /// Re-runs the reward plugin `plugin` on the stored interaction
    /// `interaction_id`, with the account as it is *now* and the same
    /// deterministic keys, so it applies at most once; 409
    /// `rewards_already_applied` when the plugin already wrote entries for
    /// it. The plugin must be an active reward-scheme plugin of the tenant
    /// (404 / 409 `plugin_not_active` otherwise).
    pub async fn retry_rewards(&self, tenant: &TenantId, interaction_id: &str, plugin: &str) -> StoreResult<RewardRun> {
        let mut attempt = 1;
        loop {
            let mut selected = self.selected(tenant, PluginKind::RewardScheme, Some(plugin)).await?;
            let Some(plugin) = selected.pop() else {
                return Err(StoreError::NotFound { entity: "plugin" });
            };
            let id = plugin.id.clone();
            let loaded = self.load_active(tenant, &id).await;
            let plugins = vec![ReadyPlugin { plugin, loaded }];
            let snapshot = self.store.reward_snapshot_of(tenant, interaction_id).await?;
            let plans = self.plan(tenant, &plugins, vec![Some(snapshot)]).await;
            let hook = RewardHook {
                plugins,
                assigned: Vec::new(),
                plans,
                last_attempt: attempt == MAX_ATTEMPTS,
            };
            match self.store.rerun_rewards_with(tenant, interaction_id, &id, &hook).await {
                Err(e) if is_stale(&e) && attempt < MAX_ATTEMPTS => {
                    metrics::counter!(STALE_METRIC).increment(1);
                    attempt += 1;
                }
                Err(e) => return Err(e),
                Ok(runs) => {
                    self.record_reward_runs(tenant, &hook, runs.iter()).await;
                    return runs
                        .into_iter()
                        .next()
                        .ok_or_else(|| StoreError::Corrupt("a reward re-run produced no outcome".into()));
                }
            }
        }
    }

    /// The rewards `customer_id` may redeem now (see the module doc).
    pub async fn redeemable(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<Redeemable> {
        let account = self.store.get_account(tenant, customer_id).await?;
        let tiers = self.store.list_tiers(tenant).await?;
        let rewards = self.store.list_rewards(tenant, Some(true)).await?;
        let rank = account.tier.as_ref().map(|tier| tier.rank);
        let allowed: Vec<Reward> = rewards.into_iter().filter(|r| host_allows(&account, rank, r)).collect();

        let plugins = self.active(tenant, PluginKind::RewardScheme).await?;
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
                .run(tenant, plugin, |p, ctx| async move {
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
