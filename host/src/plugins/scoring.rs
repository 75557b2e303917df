//! Stored scores: fitting scoring plugins on a tenant's population, scoring
//! customers in batches (`score-batch`) and storing the results, batch jobs
//! over whole tenants, and the background worker that rescores customers
//! after new interactions.
//!
//! Two ways scores get recomputed, on purpose:
//! - **Queued rescoring** (per customer): ingest enqueues the customer in
//!   the same transaction as the interaction (`store::scores::enqueue_rescore_tx`);
//!   the worker started by the server drains the queue every
//!   [`RESCORE_INTERVAL`], so a stored score is at most ~1-2 s behind. Every
//!   node runs one; each claims its batches with a lease ([`RESCORE_LEASE`],
//!   `Store::claim_rescores`), so no two nodes rescore the same customer. Doing
//!   it inline would put every plugin's latency (and failures) on the ingest
//!   path, and would rescore a customer once per interaction of a batch.
//! - **Batch jobs** (whole tenant, `POST /v1/scoring/jobs`, `rapport score`):
//!   fit each plugin on the population (quintile breakpoints, BG/NBD
//!   parameters, ...), then rescore every customer, with progress. A job
//!   may score as of a past date (its plugins see that date as "now" and no
//!   later interaction); the date is stored with the job and every score.
//!
//! The two must not undo each other: the worker leaves a tenant alone while
//! its job runs or while the tenant paused it (`store::scores`), and a job
//! clears the queue entries of the customers it scored, but only those
//! enqueued before it read them, so a later interaction is still rescored
//! (as of its own time) while an import's backlog does not replace the
//! job's as-of scores with today's.
//!
//! A job is a three-stage pipeline so the two cores stay busy: a loader task
//! reads the next chunk of histories while this task runs the plugins on the
//! current one and concurrently saves the previous one's scores.
//!
//! Failures: a call that fails counts towards the plugin's suspension like
//! any other call (see `plugins.rs`); once a plugin is no longer active for
//! the tenant the run stops calling it. A customer whose score the plugin
//! refused (`plugin-error` for that item) is counted in `failed_customers`
//! and keeps its previous score. A plugin whose fit failed or that was
//! stopped makes the job `partially_failed` (or `failed` if no plugin is
//! left), with each plugin's outcome in the job; every fit is recorded for
//! `GET /v1/plugins/{id}/fit`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

use super::{MAX_HISTORY, PluginFailure, PluginRun, PluginService};
use crate::manifest::PluginKind;
use crate::manifest::effective::EffectivePlugin;
use crate::runtime::contract::inputs::{CustomerHistory, Purchase, PurchaseSummary};
use crate::runtime::contract::scoring::CustomerScore;
use crate::runtime::contract::types;
use crate::runtime::history::{HistoryBuilder, ItemParts};
use crate::store::plugin_fits::NewFit;
use crate::store::scores::{
    JobStatus, NewScore, PluginOutcome, PluginOutcomeError, PluginOutcomeStatus, PopulationMember, QueuedRescore,
    ScoringHistory, ScoringJob,
};
use crate::store::{StoreError, StoreResult, TenantId, now_ms};

/// Customers per `score-batch` call (and per stored chunk). Large enough to
/// amortise instantiation and a transaction, small enough that one call of
/// a simple plugin stays far inside a one-second deadline.
pub const BATCH_SIZE: usize = 500;
/// How often the background worker looks at the rescore queue.
pub const RESCORE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a worker holds the queue entries it claimed (one batch of
/// [`BATCH_SIZE`]) before another node may take them over: far beyond the
/// time a batch takes (each plugin call has its own deadline), short enough
/// that a dead node's customers are rescored a few minutes later.
pub const RESCORE_LEASE: Duration = Duration::from_secs(120);
/// Batches one tenant may take per worker pass, so a tenant ingesting
/// non-stop cannot starve the others.
pub const QUEUE_BATCHES_PER_TENANT: usize = 20;

/// What a rescoring pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescoreOutcome {
    /// Customers processed.
    pub customers: u64,
    /// Scores stored (one per customer and plugin that succeeded).
    pub scores_stored: u64,
    /// Customers at least one plugin could not score.
    pub failed_customers: u64,
}

impl std::ops::AddAssign for RescoreOutcome {
    fn add_assign(&mut self, o: RescoreOutcome) {
        self.customers += o.customers;
        self.scores_stored += o.scores_stored;
        self.failed_customers += o.failed_customers;
    }
}

/// A plugin during a long run: its state when the run began, kept up to
/// date with the run's own calls, and why it was stopped, if it was.
struct RunningPlugin {
    plugin: EffectivePlugin,
    stopped: Option<PluginFailure>,
}

impl RunningPlugin {
    fn new(plugin: EffectivePlugin) -> RunningPlugin {
        RunningPlugin { plugin, stopped: None }
    }
}

/// Progress callback of a job: `(customers done, customers in total)`.
pub type ProgressFn<'a> = &'a (dyn Fn(i64, i64) + Send + Sync);

/// The plugin input for one customer. With an `as_of` time (scoring as of
/// a past date), interactions after it are left out, so the plugin sees the
/// customer as they were then, not just an earlier clock.
pub(super) fn history_to_guest(h: ScoringHistory, now: i64, as_of: Option<i64>) -> CustomerHistory {
    let mut builder = HistoryBuilder::with_capacity(h.interactions.len());
    for i in h
        .interactions
        .iter()
        .filter(|i| as_of.is_none_or(|cutoff| i.occurred_at <= cutoff))
    {
        // Items are priced in the interaction's currency; ingest never
        // stores items without one, "XXX" is only a fallback.
        let currency = i.currency.as_deref().unwrap_or("XXX");
        builder.push(
            &i.kind,
            i.channel.as_deref(),
            i.occurred_at,
            match (i.amount_minor, i.currency.as_deref()) {
                (Some(minor), Some(currency)) => Some((currency, minor)),
                _ => None,
            },
            i.items.iter().map(|item| ItemParts {
                sku: &item.sku,
                quantity: item.quantity,
                currency,
                unit_price_minor: item.unit_price_minor,
            }),
            &i.payload,
        );
    }
    let customer = types::Customer {
        id: h.customer.id,
        external_id: h.customer.external_id,
        name: h.customer.name,
        email: h.customer.email,
        phone: h.customer.phone,
        attributes: h.customer.attributes,
        created_at: h.customer.created_at,
    };
    builder.finish(customer, h.truncated, now)
}

/// The population as of `as_of`: later purchases had not happened yet.
/// Customers are all kept, whatever their `created_at`: that is when the
/// CRM learnt of them, and an import of historical data (CDNOW) creates
/// every customer long after their purchases.
fn as_of_member(mut member: PopulationMember, as_of: Option<i64>) -> PopulationMember {
    if let Some(cutoff) = as_of {
        member.purchases.retain(|p| p.at <= cutoff);
    }
    member
}

fn summary_to_guest(m: PopulationMember) -> PurchaseSummary {
    PurchaseSummary {
        customer_id: m.customer_id,
        created_at: m.created_at,
        purchases: m
            .purchases
            .into_iter()
            .map(|p| Purchase {
                at: p.at,
                amount_minor: p.amount_minor,
                currency: p.currency,
            })
            .collect(),
    }
}

/// Blank labels and segments are no label or segment (so they group as
/// `null`, not as a segment named "").
fn non_blank(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Where a score comes from: when its input was read, the job and the
/// as-of date it was computed for.
#[derive(Debug, Clone, Copy)]
struct Provenance<'a> {
    read_at: i64,
    job_id: Option<&'a str>,
    as_of: Option<i64>,
}

fn new_score(customer_id: &str, plugin_id: &str, version: &str, s: CustomerScore, from: Provenance<'_>) -> NewScore {
    NewScore {
        customer_id: customer_id.to_string(),
        plugin_id: plugin_id.to_string(),
        value: s.value,
        label: non_blank(s.label),
        segment: non_blank(s.segment),
        explanation: s.explanation,
        components: s.components,
        computed_at: from.read_at,
        job_id: from.job_id.map(str::to_owned),
        as_of: from.as_of,
        plugin_version: Some(version.to_owned()),
    }
}

fn outcome_error(fail: &PluginFailure) -> Option<PluginOutcomeError> {
    Some(PluginOutcomeError {
        code: fail.code.clone(),
        message: fail.message.clone(),
    })
}

/// A store error as a job's `error` text: database internals stay in the log.
fn job_error(e: &StoreError) -> String {
    match e {
        StoreError::Database(_) | StoreError::Corrupt(_) => "database error (see the server log)".to_string(),
        other => other.to_string(),
    }
}

impl PluginService {
    /// Validates and creates a batch job (queued; run it with
    /// [`PluginService::run_job`]). `plugin`: 404 if the tenant has no such
    /// scoring plugin, 409 `plugin_not_active` if it is disabled or
    /// suspended; without one, 409 `no_active_scoring_plugins` if none is
    /// active. 409 `scoring_job_active` while another job runs.
    pub async fn create_scoring_job(&self, tenant: &TenantId, plugin: Option<&str>) -> StoreResult<ScoringJob> {
        self.create_scoring_job_as_of(tenant, plugin, None).await
    }

    /// [`PluginService::create_scoring_job`] scoring as of `as_of` (epoch
    /// ms): the plugins see that time as "now", and interactions after it
    /// are left out of the fit's population and of every history.
    pub async fn create_scoring_job_as_of(
        &self,
        tenant: &TenantId,
        plugin: Option<&str>,
        as_of: Option<i64>,
    ) -> StoreResult<ScoringJob> {
        let plugins = self.selected(tenant, PluginKind::ScoringRule, plugin).await?;
        if plugins.is_empty() {
            return Err(StoreError::conflict(
                "no_active_scoring_plugins",
                "this tenant has no active scoring plugin",
            ));
        }
        self.store.create_scoring_job_as_of(tenant, plugin, as_of).await
    }

    /// Fits the tenant's active scoring plugins (or just `only`) on the
    /// tenant's population, returning each plugin's JSON summary.
    pub async fn fit_scoring(&self, tenant: &TenantId, only: Option<&str>) -> StoreResult<Vec<PluginRun<String>>> {
        let plugins = self.selected(tenant, PluginKind::ScoringRule, only).await?;
        self.fit_plugins(tenant, &plugins, now_ms(), None, None).await
    }

    /// Records a fit's outcome for `GET /v1/plugins/{id}/fit`. A failure to
    /// record is logged, not returned: the fit itself happened.
    pub(super) async fn record_fit(
        &self,
        tenant: &TenantId,
        run: &PluginRun<String>,
        job_id: Option<&str>,
        as_of: Option<i64>,
    ) {
        let fit = NewFit {
            plugin_id: &run.plugin,
            fitted_at: now_ms(),
            result: match &run.result {
                Ok(summary) => Ok(summary.as_str()),
                Err(fail) => Err((fail.code.as_str(), fail.message.as_str())),
            },
            job_id,
            as_of,
            duration_ms: i64::try_from(run.report.duration.as_millis()).unwrap_or(i64::MAX),
        };
        if let Err(e) = self.store.record_plugin_fit(tenant, fit).await {
            tracing::warn!(tenant = %tenant, plugin = %run.plugin, error = %e, "cannot record the fit");
        }
    }

    async fn fit_plugins(
        &self,
        tenant: &TenantId,
        plugins: &[EffectivePlugin],
        now: i64,
        as_of: Option<i64>,
        job_id: Option<&str>,
    ) -> StoreResult<Vec<PluginRun<String>>> {
        if plugins.is_empty() {
            return Ok(Vec::new());
        }
        let population: Vec<PurchaseSummary> = self
            .store
            .population(tenant)
            .await?
            .into_iter()
            .map(|member| as_of_member(member, as_of))
            .map(summary_to_guest)
            .collect();
        let mut runs = Vec::with_capacity(plugins.len());
        for plugin in plugins {
            let population = &population;
            let run = self
                .run(
                    tenant,
                    plugin,
                    |p, ctx| async move { p.fit(ctx, population, now).await },
                )
                .await;
            self.record_fit(tenant, &run, job_id, as_of).await;
            runs.push(run);
        }
        Ok(runs)
    }

    /// Rescores the given customers (ids the tenant does not have are
    /// skipped) with the tenant's active scoring plugins, or just `only`,
    /// and stores the scores.
    pub async fn rescore_customers(
        &self,
        tenant: &TenantId,
        only: Option<&str>,
        customer_ids: &[String],
    ) -> StoreResult<RescoreOutcome> {
        let mut plugins: Vec<RunningPlugin> = self
            .selected(tenant, PluginKind::ScoringRule, only)
            .await?
            .into_iter()
            .map(RunningPlugin::new)
            .collect();
        self.rescore_ids(tenant, &mut plugins, customer_ids).await
    }

    async fn rescore_ids(
        &self,
        tenant: &TenantId,
        plugins: &mut [RunningPlugin],
        customer_ids: &[String],
    ) -> StoreResult<RescoreOutcome> {
        let mut outcome = RescoreOutcome::default();
        if plugins.is_empty() {
            return Ok(outcome);
        }
        for chunk in customer_ids.chunks(BATCH_SIZE) {
            let read_at = now_ms();
            let histories = self.store.scoring_histories(tenant, chunk, MAX_HISTORY).await?;
            let customers = histories.len() as u64;
            let from = Provenance {
                read_at,
                job_id: None,
                as_of: None,
            };
            let (scores, failed) = self.score_chunk(tenant, plugins, histories, from).await;
            outcome += RescoreOutcome {
                customers,
                scores_stored: self.store.save_scores(tenant, &scores).await?,
                failed_customers: failed,
            };
        }
        Ok(outcome)
    }

    /// Runs every plugin still running on one chunk. Returns the scores and
    /// how many customers at least one plugin failed to score.
    async fn score_chunk(
        &self,
        tenant: &TenantId,
        plugins: &mut [RunningPlugin],
        histories: Vec<ScoringHistory>,
        from: Provenance<'_>,
    ) -> (Vec<NewScore>, u64) {
        let ids: Vec<String> = histories.iter().map(|h| h.customer.id.clone()).collect();
        // The plugins' "now": the job's as-of time when one is set (scoring a
        // historical dataset), else when the data was read. `computed_at`
        // stays `read_at` either way: it orders stored scores by freshness.
        let now = from.as_of.unwrap_or(from.read_at);
        let inputs: Vec<CustomerHistory> = histories
            .into_iter()
            .map(|h| history_to_guest(h, now, from.as_of))
            .collect();
        let mut failed = vec![false; ids.len()];
        let mut scores = Vec::with_capacity(ids.len() * plugins.len());
        for running in plugins.iter_mut() {
            if running.stopped.is_some() {
                failed.iter_mut().for_each(|f| *f = true);
                continue;
            }
            // The chunk's customers by the version that serves each (one
            // group unless a version is staged; see `versions`).
            let groups = match self.version_pick(tenant, &running.plugin.id).await {
                Ok(pick) => {
                    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
                    for (i, id) in ids.iter().enumerate() {
                        let version = pick.for_customer(tenant, &running.plugin.id, Some(id));
                        match groups.iter_mut().find(|(v, _)| v == version) {
                            Some((_, members)) => members.push(i),
                            None => groups.push((version.to_owned(), vec![i])),
                        }
                    }
                    groups
                }
                Err(fail) => {
                    failed.iter_mut().for_each(|f| *f = true);
                    running.stopped = Some(fail);
                    continue;
                }
            };
            for (version, members) in groups {
                let subset: Vec<CustomerHistory>;
                let inputs: &[CustomerHistory] = if members.len() == inputs.len() {
                    &inputs
                } else {
                    subset = members.iter().map(|&i| inputs[i].clone()).collect();
                    &subset
                };
                let run = self
                    .run_version(tenant, &running.plugin, &version, |p, ctx| async move {
                        p.score_batch(ctx, inputs).await
                    })
                    .await;
                if !self
                    .take_chunk_run(tenant, running, run, &ids, &members, &mut failed, &mut scores, from)
                    .await
                {
                    break;
                }
            }
        }
        (scores, failed.iter().filter(|f| **f).count() as u64)
    }

    /// Records one version's run over part of a chunk (`members`, indexes
    /// into `ids`); returns false when the plugin stopped (the rest of the
    /// chunk is then left alone).
    #[allow(clippy::too_many_arguments)]
    async fn take_chunk_run(
        &self,
        tenant: &TenantId,
        running: &mut RunningPlugin,
        run: PluginRun<Vec<Result<CustomerScore, crate::runtime::CallError>>>,
        ids: &[String],
        members: &[usize],
        failed: &mut [bool],
        scores: &mut Vec<NewScore>,
        from: Provenance<'_>,
    ) -> bool {
        {
            match run.result {
                Ok(results) => {
                    running.plugin.consecutive_failures = 0;
                    for (&i, result) in members.iter().zip(results) {
                        let customer_id = &ids[i];
                        match result {
                            Ok(score) => {
                                scores.push(new_score(customer_id, &running.plugin.id, &run.version, score, from))
                            }
                            Err(err) => {
                                failed[i] = true;
                                tracing::debug!(tenant = %tenant, plugin = %running.plugin.id, customer = %customer_id,
                                    error = %err, "plugin could not score a customer");
                            }
                        }
                    }
                }
                Err(fail) => {
                    running.plugin.consecutive_failures += 1;
                    members.iter().for_each(|&i| failed[i] = true);
                    // Suspended by this failure (or disabled meanwhile)?
                    // Then the rest of the run leaves it alone.
                    match self.find(tenant, &running.plugin.id).await {
                        Ok(Some(now)) if now.runs() => {}
                        _ => {
                            failed.iter_mut().for_each(|f| *f = true);
                            running.stopped = Some(fail);
                        }
                    }
                }
            }
        }
        running.stopped.is_none()
    }

    /// Runs a queued job to the end: fit, then rescore every customer.
    /// Returns the finished job (status `failed` with its `error` when it
    /// could not complete).
    pub async fn run_job(&self, tenant: &TenantId, job_id: &str) -> StoreResult<ScoringJob> {
        self.run_job_with_progress(tenant, job_id, &|_, _| {}).await
    }

    /// [`PluginService::run_job`], calling `progress(done, total)` after each
    /// chunk. A job created with an as-of date scores as of it: the plugins
    /// see it as "now", and interactions after it are left out (of the fit's
    /// population and of every history), so customers are scored as they
    /// were on that date.
    pub async fn run_job_with_progress(
        &self,
        tenant: &TenantId,
        job_id: &str,
        progress: ProgressFn<'_>,
    ) -> StoreResult<ScoringJob> {
        let job = self.store.get_scoring_job(tenant, job_id).await?;
        let total = self.store.count_customers(tenant).await?;
        self.store.start_scoring_job(tenant, job_id, total).await?;
        progress(0, total);
        let mut outcomes = Vec::new();
        let (status, error) = match self.job_body(tenant, &job, total, progress, &mut outcomes).await {
            Ok(Some(reason)) => (JobStatus::Failed, Some(reason)),
            Ok(None) => {
                let failed: Vec<String> = outcomes
                    .iter()
                    .filter(|o| o.status == PluginOutcomeStatus::Failed)
                    .map(|o| match &o.error {
                        Some(e) => format!("{}: {} ({})", o.plugin, e.message, e.code),
                        None => o.plugin.clone(),
                    })
                    .collect();
                if failed.is_empty() {
                    (JobStatus::Succeeded, None)
                } else {
                    (
                        JobStatus::PartiallyFailed,
                        Some(format!("some plugins failed: {}", failed.join("; "))),
                    )
                }
            }
            Err(e) => {
                tracing::error!(tenant = %tenant, job = job_id, error = %e, "scoring job failed");
                (JobStatus::Failed, Some(job_error(&e)))
            }
        };
        self.store
            .finish_scoring_job(tenant, job_id, status, error.as_deref(), &outcomes)
            .await
    }

    /// The job's work; `Ok(Some(reason))` when it ended without scoring
    /// everyone for a reason the operator should read. Fills `outcomes` with
    /// each plugin's outcome as far as the job got.
    async fn job_body(
        &self,
        tenant: &TenantId,
        job: &ScoringJob,
        total: i64,
        progress: ProgressFn<'_>,
        outcomes: &mut Vec<PluginOutcome>,
    ) -> StoreResult<Option<String>> {
        let plugins = self
            .selected(tenant, PluginKind::ScoringRule, job.plugin.as_deref())
            .await?;
        if plugins.is_empty() {
            return Ok(Some("this tenant has no active scoring plugin".to_string()));
        }
        let as_of = job.as_of.map(crate::store::millis);
        let started = Instant::now();
        let fits = self
            .fit_plugins(tenant, &plugins, as_of.unwrap_or_else(now_ms), as_of, Some(&job.id))
            .await?;
        tracing::info!(tenant = %tenant, job = %job.id, fit_ms = started.elapsed().as_millis() as u64,
            "scoring job: population loaded and plugins fitted");
        let plugin_order: Vec<String> = plugins.iter().map(|p| p.id.clone()).collect();
        let mut summary = Map::new();
        let mut running = Vec::with_capacity(plugins.len());
        let mut fit_errors = Vec::new();
        for (plugin, fit) in plugins.into_iter().zip(fits) {
            match fit.result {
                Ok(text) => {
                    // The runtime checked it is JSON; a string fallback
                    // keeps the summary even if that ever changes.
                    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    summary.insert(plugin.id.clone(), value);
                    running.push(RunningPlugin::new(plugin));
                }
                Err(fail) => {
                    // Scoring with parameters that failed to fit would
                    // store scores on stale (or no) parameters: skip it.
                    fit_errors.push(format!("{}: {} ({})", plugin.id, fail.message, fail.code));
                    outcomes.push(PluginOutcome {
                        plugin: plugin.id.clone(),
                        status: PluginOutcomeStatus::Failed,
                        stage: Some("fit".to_string()),
                        error: outcome_error(&fail),
                    });
                    summary.insert(
                        plugin.id.clone(),
                        json!({ "error": { "code": fail.code, "message": fail.message } }),
                    );
                }
            }
        }
        self.store
            .scoring_job_fit_summary(tenant, &job.id, &Value::Object(summary))
            .await?;
        if running.is_empty() {
            return Ok(Some(format!("every plugin failed to fit: {}", fit_errors.join("; "))));
        }
        let ended = self
            .rescore_all(tenant, &mut running, &job.id, total, as_of, progress)
            .await;
        // Whether or not the run completed, each plugin that got this far
        // either ran to the end of it or was stopped.
        for p in &running {
            outcomes.push(match &p.stopped {
                None => PluginOutcome {
                    plugin: p.plugin.id.clone(),
                    status: PluginOutcomeStatus::Succeeded,
                    stage: None,
                    error: None,
                },
                Some(fail) => PluginOutcome {
                    plugin: p.plugin.id.clone(),
                    status: PluginOutcomeStatus::Failed,
                    stage: Some("score".to_string()),
                    error: outcome_error(fail),
                },
            });
        }
        // Outcomes in the plugins' order, whichever stage they ended in.
        outcomes.sort_by_key(|o| plugin_order.iter().position(|id| *id == o.plugin));
        ended
    }

    /// Rescores every customer of the tenant, in id order, as a pipeline
    /// (see the module doc).
    async fn rescore_all(
        &self,
        tenant: &TenantId,
        plugins: &mut [RunningPlugin],
        job_id: &str,
        total: i64,
        as_of: Option<i64>,
        progress: ProgressFn<'_>,
    ) -> StoreResult<Option<String>> {
        // (chunk, its queue entries as seen before the read, when it was
        // read, how long reading took)
        type Loaded = StoreResult<(Vec<ScoringHistory>, Vec<QueuedRescore>, i64, Duration)>;
        let (tx, mut rx) = mpsc::channel::<Loaded>(2);
        let store = self.store.clone();
        let loader_tenant = tenant.clone();
        tokio::spawn(async move {
            let mut after: Option<String> = None;
            loop {
                let read_at = now_ms();
                let started = Instant::now();
                let page = store
                    .scoring_histories_page_with_queue(&loader_tenant, after.as_deref(), BATCH_SIZE, MAX_HISTORY)
                    .await;
                let (page, queued) = match page {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let Some(last) = page.last() else { return };
                after = Some(last.customer.id.clone());
                // A closed channel means the run stopped: stop reading.
                if tx.send(Ok((page, queued, read_at, started.elapsed()))).await.is_err() {
                    return;
                }
            }
        });
        let (mut done, mut failed) = (0i64, 0i64);
        // Scores of the previous chunk, waiting to be saved, with its
        // customers, failures and the queue entries the save covers.
        let mut pending: Option<(Vec<NewScore>, i64, i64, Vec<QueuedRescore>)> = None;
        let mut stopped = None;
        // Where the time goes, for the log: each stage's busy time, and how
        // long this task waited for the loader (the pipeline's bottleneck
        // is whichever stage is busiest).
        let (mut load, mut waited, mut scoring, mut saving) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
        loop {
            let wait_started = Instant::now();
            let Some(page) = rx.recv().await else { break };
            waited += wait_started.elapsed();
            let (histories, queued, read_at, load_time) = page?;
            load += load_time;
            let customers = histories.len() as i64;
            let save = async {
                let started = Instant::now();
                let saved = match pending.take() {
                    Some((scores, n, f, queued)) => self
                        .save_job_chunk(tenant, &scores, &queued)
                        .await
                        .map(|_| Some((n, f))),
                    None => Ok(None),
                };
                (saved, started.elapsed())
            };
            let score = async {
                let started = Instant::now();
                let from = Provenance {
                    read_at,
                    job_id: Some(job_id),
                    as_of,
                };
                let scored = self.score_chunk(tenant, plugins, histories, from).await;
                (scored, started.elapsed())
            };
            let ((saved, save_time), ((scores, chunk_failed), score_time)) = tokio::join!(save, score);
            saving += save_time;
            scoring += score_time;
            if let Some((n, f)) = saved? {
                done += n;
                failed += f;
                self.store.scoring_job_progress(tenant, job_id, done, failed).await?;
                progress(done, total);
            }
            pending = Some((scores, customers, chunk_failed as i64, queued));
            if plugins.iter().all(|p| p.stopped.is_some()) {
                let reasons: Vec<String> = plugins
                    .iter()
                    .filter_map(|p| {
                        p.stopped
                            .as_ref()
                            .map(|f| format!("{}: {} ({})", p.plugin.id, f.message, f.code))
                    })
                    .collect();
                stopped = Some(format!("stopped: no plugin is active any more: {}", reasons.join("; ")));
                break;
            }
        }
        drop(rx);
        if let Some((scores, n, f, queued)) = pending.take() {
            let started = Instant::now();
            self.save_job_chunk(tenant, &scores, &queued).await?;
            saving += started.elapsed();
            done += n;
            failed += f;
            self.store.scoring_job_progress(tenant, job_id, done, failed).await?;
            progress(done, total);
        }
        let ms = |d: Duration| d.as_millis() as u64;
        tracing::info!(tenant = %tenant, job = job_id, customers = done, load_ms = ms(load),
            waited_for_load_ms = ms(waited), score_ms = ms(scoring), save_ms = ms(saving),
            "scoring job stages");
        Ok(stopped)
    }

    /// Saves a job's chunk of scores, then clears the queue entries the chunk
    /// covers (see the module doc): after the save, so a crash in between
    /// leaves the customers queued rather than unscored.
    async fn save_job_chunk(
        &self,
        tenant: &TenantId,
        scores: &[NewScore],
        queued: &[QueuedRescore],
    ) -> StoreResult<u64> {
        let saved = self.store.save_scores(tenant, scores).await?;
        self.store.clear_rescores(tenant, queued).await?;
        Ok(saved)
    }

    /// Runs the tenant's active scoring plugins (or just `only`) on one
    /// customer, as of `as_of` (epoch ms) when given: the plugins see that
    /// time as "now" and none of the customer's later interactions, as in a
    /// job scoring as of that date. Plugins run one after another; each
    /// failure is reported in its own entry and never hides the others'
    /// results. Nothing is stored.
    pub async fn score_customer(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        only: Option<&str>,
        as_of: Option<i64>,
    ) -> StoreResult<Vec<PluginRun<CustomerScore>>> {
        // The (first) plugin's share of the instance pool before the
        // database is read: a call that finds no capacity waits, and is
        // refused, without touching it (see `PluginService::reserve`).
        let mut reserved = match self.reserve_ahead(tenant, PluginKind::ScoringRule, only).await {
            Ok(r) => r,
            Err(busy) => return Ok(vec![busy]),
        };
        let plugins = self.selected(tenant, PluginKind::ScoringRule, only).await?;
        if reserved.is_none()
            && let Some(first) = plugins.first()
        {
            reserved = match self.reserve(tenant, &first.id).await {
                Ok(r) => r,
                Err(busy) => return Ok(vec![busy]),
            };
        }
        let read_at = now_ms();
        let history = self
            .store
            .scoring_histories(tenant, &[customer_id.to_string()], MAX_HISTORY)
            .await?
            .pop()
            .ok_or(StoreError::NotFound { entity: "customer" })?;
        let history = history_to_guest(history, as_of.unwrap_or(read_at), as_of);
        let mut runs = Vec::with_capacity(plugins.len());
        for plugin in &plugins {
            let history = &history;
            let reservation = reserved.take();
            runs.push(
                self.run_for(tenant, plugin, Some(customer_id), |p, ctx| async move {
                    p.session(ctx).with_reservation(reservation).score(history).await
                })
                .await,
            );
        }
        Ok(runs)
    }

    /// One pass over the rescore queue of every tenant, as worker `node`:
    /// claims queued customers with a [`RESCORE_LEASE`], rescores them with
    /// the tenant's active scoring plugins and removes them from the queue
    /// (a tenant without any just has its queue emptied). Entries another
    /// node holds are left to it. One tenant's failure is logged and does
    /// not stop the others.
    pub async fn drain_rescore_queue(&self, node: &str) -> StoreResult<RescoreOutcome> {
        let mut outcome = RescoreOutcome::default();
        for tenant in self.store.tenants_with_queued_rescores().await? {
            match self.drain_tenant_queue(&tenant, node).await {
                Ok(o) => outcome += o,
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "rescoring queued customers failed")
                }
            }
        }
        Ok(outcome)
    }

    async fn drain_tenant_queue(&self, tenant: &TenantId, node: &str) -> StoreResult<RescoreOutcome> {
        let lease_ms = i64::try_from(RESCORE_LEASE.as_millis()).unwrap_or(i64::MAX);
        let mut outcome = RescoreOutcome::default();
        for _ in 0..QUEUE_BATCHES_PER_TENANT {
            let claim = self.store.claim_rescores(tenant, node, lease_ms, BATCH_SIZE).await?;
            if claim.entries.is_empty() {
                break;
            }
            let ids: Vec<String> = claim.entries.iter().map(|q| q.customer_id.clone()).collect();
            let rescored = async {
                let mut plugins: Vec<RunningPlugin> = self
                    .active(tenant, PluginKind::ScoringRule)
                    .await?
                    .into_iter()
                    .map(RunningPlugin::new)
                    .collect();
                self.rescore_ids(tenant, &mut plugins, &ids).await
            }
            .await;
            match rescored {
                Ok(o) => outcome += o,
                Err(e) => {
                    // Hand the batch back rather than sit on it until the
                    // lease expires; the error is still this pass's.
                    if let Err(release) = self.store.release_rescores(tenant, &claim).await {
                        tracing::warn!(tenant = %tenant, error = %release, "cannot release claimed rescores");
                    }
                    return Err(e);
                }
            }
            self.store.ack_rescores(tenant, &claim).await?;
            if claim.entries.len() < BATCH_SIZE {
                break;
            }
        }
        Ok(outcome)
    }

    /// Starts the scoring jobs imports queued (see
    /// [`Store::schedule_import_scoring`]), each in a task of its own so the
    /// queue keeps draining for other tenants meanwhile. Every node's worker
    /// tries; `start_scoring_job` lets exactly one start each job, and the
    /// others' `scoring_job_not_queued` is expected, not an error.
    /// Not while plugins are still loading (just after start-up, or a
    /// reload): the job would find the tenant's scoring plugins not yet
    /// active and end without scoring anyone.
    pub async fn start_import_jobs(self: &Arc<Self>) -> StoreResult<usize> {
        if !self.pending().is_empty() {
            return Ok(0);
        }
        let jobs = self.store.queued_import_jobs().await?;
        let started = jobs.len();
        for (tenant, job_id) in jobs {
            let service = Arc::clone(self);
            tokio::spawn(async move {
                match service.run_job(&tenant, &job_id).await {
                    Ok(job) => tracing::info!(tenant = %tenant, job = %job.id, status = job.status.as_str(),
                        done = job.done, failed = job.failed_customers, "import scoring job finished"),
                    Err(StoreError::Conflict {
                        code: "scoring_job_not_queued",
                        ..
                    }) => {}
                    Err(e) => tracing::warn!(tenant = %tenant, job = %job_id, error = %e,
                        "import scoring job could not run"),
                }
            });
        }
        Ok(started)
    }

    /// Starts the background worker that drains the rescore queue every
    /// `every`, until `shutdown` turns true (or its sender goes away).
    /// `node` names this node in the queue's leases.
    pub fn spawn_rescore_worker(
        self: Arc<Self>,
        node: String,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    changed = shutdown.changed() => if changed.is_err() { return },
                }
                if *shutdown.borrow() {
                    return;
                }
                if let Err(e) = self.start_import_jobs().await {
                    tracing::warn!(error = %e, "rescore worker: cannot read the queued import jobs");
                }
                match self.drain_rescore_queue(&node).await {
                    Ok(o) if o.customers > 0 => tracing::debug!(
                        customers = o.customers,
                        scores = o.scores_stored,
                        failed = o.failed_customers,
                        "rescored queued customers"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "rescore worker: cannot read the queue"),
                }
            }
        })
    }
}
