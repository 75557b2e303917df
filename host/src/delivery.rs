//! Outbound delivery: the workers that drain the outbox (`messages`) through
//! the tenants' channel-connector plugins.
//!
//! Each node (process) has an id (UUIDv7, new at every start) and runs
//! `[delivery] workers` tasks. A worker
//! 1. claims a few due messages of any tenant with a lease of
//!    `[delivery] lease_ms` (`Store::claim_messages`; every node may do so
//!    concurrently, PostgreSQL `SKIP LOCKED` keeps them apart);
//! 2. finds the tenant's connector for the message's channel (enabled, not
//!    suspended, listing the channel); without one the message goes back to
//!    `pending` with `last_error` and is looked at again later, until its
//!    retry window closes (then `dead`);
//! 3. waits for a permit from the tenant's and the connector's token buckets
//!    (`delivery/rate.rs`; per node), never past its lease;
//! 4. calls the connector's `deliver` through the plugin service, so traps
//!    and timeouts count towards the plugin's suspension while a
//!    `delivery-error` (the connector's own answer) does not;
//! 5. records the attempt in the delivery log and the outcome on the message,
//!    fenced on its lease (`Store::record_attempt`): delivered; retryable
//!    (connector said so, or the plugin trapped / timed out / failed to
//!    load) → `pending` after a backoff with full jitter, or `dead` once
//!    `max_attempts` or `max_age_s` are used up (`delivery/policy.rs`);
//!    not retryable → `dead` at once.
//!
//! Delivery is at least once: a node that dies after the connector sent a
//! message but before recording it leaves the lease to expire, and another
//! node sends it again with the same message id (the connector passes it on
//! as the idempotency key, so a receiver can drop the duplicate).
//!
//! Stopping: workers finish the message in flight, hand back the rest of
//! their claim (`Store::release_claim`), and exit.

pub mod policy;
pub mod rate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::DeliveryConfig;
use crate::manifest::{DeliveryPolicy, ManifestHandle};
use crate::plugins::PluginService;
use crate::runtime::contract::channel;
use crate::store::messages::{AttemptOutcome, AttemptReport, Claim, Next};
use crate::store::{Store, now_ms};

/// Messages one worker claims at once. Small: a claimed message waits for
/// the ones before it, and its lease runs meanwhile.
const CLAIM_BATCH: i64 = 4;
/// How long a message without an active connector waits before it is
/// looked at again.
pub const NO_CONNECTOR_RETRY_MS: i64 = 5_000;
/// A message whose lease has less than this left is handed back rather than
/// delivered (another node might claim it mid-call).
const LEASE_MARGIN_MS: i64 = 1_000;
/// How often the outbox depth gauge is refreshed.
const DEPTH_INTERVAL: Duration = Duration::from_secs(5);

/// The plugin failure codes that are a connector's own "do not retry".
const NOT_RETRYABLE: &str = "plugin_delivery_failed";
/// A connector's own "try again later".
const RETRYABLE: &str = "plugin_delivery_retryable";

/// What the workers share.
struct Shared {
    node: String,
    store: Store,
    plugins: Arc<PluginService>,
    manifest: Arc<ManifestHandle>,
    limits: rate::RateLimits,
    lease_ms: i64,
    poll: Duration,
}

/// The running workers of one node.
pub struct DeliveryHandle {
    node: String,
    tasks: Vec<JoinHandle<()>>,
}

impl DeliveryHandle {
    /// This node's id, as recorded in leases and the delivery log.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Waits for the workers to finish (after the shutdown signal they were
    /// started with has been sent).
    pub async fn join(self) {
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "delivery worker ended abnormally");
            }
        }
    }
}

/// Starts this node's delivery workers (none when `[delivery] enabled =
/// false`); they stop when `shutdown` turns true.
pub fn spawn(
    config: &DeliveryConfig,
    store: Store,
    plugins: Arc<PluginService>,
    manifest: Arc<ManifestHandle>,
    shutdown: watch::Receiver<bool>,
) -> DeliveryHandle {
    let node = uuid::Uuid::now_v7().to_string();
    if !config.enabled || config.workers == 0 {
        return DeliveryHandle {
            node,
            tasks: Vec::new(),
        };
    }
    let shared = Arc::new(Shared {
        node: node.clone(),
        store,
        plugins,
        manifest,
        limits: rate::RateLimits::default(),
        lease_ms: i64::try_from(config.lease_ms).unwrap_or(i64::MAX),
        poll: Duration::from_millis(config.poll_ms.max(1)),
    });
    tracing::info!(node = %node, workers = config.workers, "delivery workers started");
    let mut tasks: Vec<JoinHandle<()>> = (0..config.workers)
        .map(|_| tokio::spawn(worker(shared.clone(), shutdown.clone())))
        .collect();
    tasks.push(tokio::spawn(depth_gauge(shared, shutdown)));
    DeliveryHandle { node, tasks }
}

async fn depth_gauge(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        match shared.store.outbox_depth().await {
            Ok(depth) => metrics::gauge!("rapport_outbox_depth").set(depth as f64),
            Err(e) => tracing::warn!(error = %e, "could not read the outbox depth"),
        }
        tokio::select! {
            _ = tokio::time::sleep(DEPTH_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

async fn worker(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let claims = match shared
            .store
            .claim_messages(&shared.node, shared.lease_ms, CLAIM_BATCH)
            .await
        {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim messages");
                Vec::new()
            }
        };
        if claims.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(shared.poll) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            continue;
        }
        let mut claims = claims.into_iter();
        for claim in claims.by_ref() {
            if *shutdown.borrow() {
                release(&shared, &claim, now_ms(), None).await;
                break;
            }
            process(&shared, &claim, &mut shutdown).await;
        }
        // Stopping: whatever was claimed and not started goes back.
        for claim in claims {
            release(&shared, &claim, now_ms(), None).await;
        }
    }
}

async fn release(shared: &Shared, claim: &Claim, next_at: i64, error: Option<&str>) {
    if let Err(e) = shared.store.release_claim(claim, next_at, error).await {
        // The lease expires on its own; another claim picks it up then.
        tracing::warn!(message = %claim.message.id, error = %e, "could not release a claimed message");
    }
}

fn count(outcome: &str, channel: &str) {
    metrics::counter!(
        "rapport_deliveries_total",
        "outcome" => outcome.to_string(),
        "channel" => channel.to_string()
    )
    .increment(1);
}

/// Delivers one claimed message and records what happened.
async fn process(shared: &Shared, claim: &Claim, shutdown: &mut watch::Receiver<bool>) {
    let tenant = &claim.tenant;
    let message = &claim.message;
    let connector = match shared.plugins.connector_for_channel(tenant, &message.channel).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(message = %message.id, error = %e, "could not look up the connector");
            release(shared, claim, now_ms() + shared.poll.as_millis() as i64, None).await;
            return;
        }
    };
    let Some((plugin, policy)) = connector else {
        no_connector(shared, claim).await;
        return;
    };

    // Rate limits: wait for permits, but give the message back rather than
    // start a delivery its lease might not cover, or delay a shutdown.
    let tenant_rate = shared.manifest.current().tenant_message_rate(tenant.as_str());
    let budget = claim.lease_expires_at - now_ms() - LEASE_MARGIN_MS;
    let permitted = tokio::select! {
        _ = shared.limits.wait(tenant.as_str(), tenant_rate, &plugin.id, policy.rate_per_second) => true,
        _ = tokio::time::sleep(Duration::from_millis(budget.max(0) as u64)) => false,
        _ = shutdown.wait_for(|stop| *stop) => false,
    };
    if !permitted {
        release(shared, claim, now_ms(), None).await;
        return;
    }

    let started_at = now_ms();
    let guest_message = channel::Message {
        id: message.id.clone(),
        customer_id: message.customer_id.clone(),
        channel: message.channel.clone(),
        to: message.to.clone(),
        subject: message.subject.clone(),
        body: message.body.clone(),
        metadata: message.metadata.to_string(),
        attempt: u32::try_from(claim.attempt).unwrap_or(u32::MAX),
        now: started_at,
    };
    let clock = Instant::now();
    let run = shared.plugins.deliver(tenant, &plugin, &guest_message).await;
    let elapsed = clock.elapsed();
    metrics::histogram!("rapport_delivery_attempt_duration_seconds", "connector" => plugin.id.clone())
        .record(elapsed.as_secs_f64());
    let now = now_ms();
    let (outcome, error, next) = match run.result {
        Ok(receipt) => (
            AttemptOutcome::Delivered,
            None,
            Next::Delivered {
                provider_id: receipt.provider_id,
            },
        ),
        Err(fail) if fail.code == NOT_RETRYABLE => (AttemptOutcome::Failed, Some(fail.message), Next::Dead),
        Err(fail) => {
            // The connector's own "retry", or a plugin failure (trap,
            // timeout, load error): the plugin may behave next time.
            let error = if fail.code == RETRYABLE {
                fail.message
            } else {
                format!("{}: {}", fail.code, fail.message)
            };
            let next = policy::after_retryable(
                &policy,
                claim.window_attempts,
                claim.window_started_at,
                now,
                &mut rand::rng(),
            );
            (AttemptOutcome::Retryable, Some(error), next)
        }
    };
    let report = AttemptReport {
        connector: Some(plugin.id.clone()),
        started_at,
        latency_ms: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
        outcome,
        error,
        next: next.clone(),
    };
    match shared.store.record_attempt(claim, &report).await {
        Ok(true) => {
            count(outcome.as_str(), &message.channel);
            if next == Next::Dead {
                count("dead", &message.channel);
                tracing::warn!(tenant = %tenant, message = %message.id, connector = %plugin.id,
                    error = report.error.as_deref().unwrap_or(""), "message is dead");
            }
        }
        Ok(false) => {
            count("lease_lost", &message.channel);
            tracing::warn!(message = %message.id, "lease lost during delivery; the newer claim decides");
        }
        Err(e) => {
            // The lease expires and the message is attempted again: at
            // least once, never lost.
            tracing::error!(message = %message.id, error = %e, "could not record a delivery attempt");
        }
    }
}

/// No active connector serves the channel: back to `pending` for a later
/// look (an admin may enable or resume one), or `dead` once the default
/// retry window is over.
async fn no_connector(shared: &Shared, claim: &Claim) {
    let message = &claim.message;
    let error = format!(
        "no active channel-connector serves channel {:?} for this tenant",
        message.channel
    );
    let now = now_ms();
    let next_at = now + NO_CONNECTOR_RETRY_MS;
    count("no_connector", &message.channel);
    if next_at > policy::window_end(&DeliveryPolicy::default(), claim.window_started_at) {
        if let Err(e) = shared.store.kill_claim(claim, &error).await {
            tracing::warn!(message = %message.id, error = %e, "could not mark a message dead");
        }
        count("dead", &message.channel);
        return;
    }
    release(shared, claim, next_at, Some(&error)).await;
}
