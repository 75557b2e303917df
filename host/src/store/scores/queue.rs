//! The rescore queue and its leases: ingest enqueues a customer in its own
//! transaction; each node's background worker claims a batch with a lease,
//! acknowledges or releases it, and a tenant may pause the worker. Its own
//! file because its locking (leases, generations) is what a queue bug is about.

use serde::Serialize;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{INSERT_ROWS_PER_STATEMENT, JOB_STALE_MS, MAX_HISTORY_CHUNK, WRITE_ATTEMPTS, retryable};
use crate::db::Backend;
use crate::store::{Store, StoreError, StoreResult, TenantId, from_millis, now_ms};

/// An entry of the rescore queue as claimed; acknowledging it removes it
/// only if nobody enqueued the customer again since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRescore {
    pub customer_id: String,
    pub generation: i64,
}

/// Queue entries leased to one node until `lease_expires_at` (epoch ms) by
/// [`Store::claim_rescores`]; entries sorted by customer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescoreClaim {
    pub node: String,
    pub lease_expires_at: i64,
    pub entries: Vec<QueuedRescore>,
}

/// Marks a customer's scores stale so the background worker rescores it
/// (about a second later). Idempotent: enqueuing a queued customer only
/// bumps its generation. Call it in the same transaction as the write that
/// made the scores stale, so the two commit or roll back together.
pub async fn enqueue_rescore_tx(conn: &mut AnyConnection, tenant: &TenantId, customer_id: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO rescore_queue (tenant_id, customer_id, enqueued_at, generation) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET generation = rescore_queue.generation + 1",
    )
    .bind(tenant.as_str())
    .bind(customer_id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`enqueue_rescore_tx`] for many customers at once (a batch ingest): one
/// statement per 500 customers, in customer id order, so that concurrent
/// batches over the same customers take the queue's row locks in one order
/// (and cannot deadlock on them), late in their transaction, and hold them
/// briefly.
pub async fn enqueue_rescore_many_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_ids: &[String],
) -> StoreResult<()> {
    let mut ids: Vec<&str> = customer_ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    for chunk in ids.chunks(500) {
        let rows: Vec<String> = (0..chunk.len()).map(|i| format!("($1, ${}, $2, 1)", i + 3)).collect();
        let sql = format!(
            "INSERT INTO rescore_queue (tenant_id, customer_id, enqueued_at, generation) VALUES {} \
             ON CONFLICT (tenant_id, customer_id) DO UPDATE SET generation = rescore_queue.generation + 1",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(tenant.as_str()).bind(now_ms());
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// SQL condition: the background worker may rescore `tenant` (a column or
/// placeholder) now. Not while the tenant paused it (`rescore_pauses`), and
/// not while a scoring job of the tenant runs (heartbeat after `stale`, a
/// placeholder): the job rescores everyone and clears the queue entries it
/// covered, so a worker rescoring beside it would only race it, and could
/// replace a score the job computed as of a past date with one as of today.
/// Entries enqueued during the job are rescored once it ends.
fn worker_may_run(tenant: &str, stale: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM rescore_pauses p WHERE p.tenant_id = {tenant}) \
         AND NOT EXISTS (SELECT 1 FROM scoring_jobs j WHERE j.tenant_id = {tenant} \
         AND j.status = 'running' AND j.updated_at > {stale})"
    )
}

/// The background rescore worker as one tenant sees it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RescoreWorkerState {
    /// Paused by the tenant (`PUT /v1/scoring/worker`, `rapport rescoring
    /// pause`): queued customers wait until it is resumed.
    pub paused: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub paused_at: Option<OffsetDateTime>,
    /// Customers waiting in the rescore queue.
    pub queued: i64,
    /// A running scoring job; the worker leaves the tenant alone meanwhile.
    pub running_job: Option<String>,
}

impl Store {
    /// Enqueues one customer outside any other transaction.
    pub async fn enqueue_rescore(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<()> {
        let mut conn = self.db().pool().acquire().await?;
        enqueue_rescore_tx(&mut conn, tenant, customer_id).await
    }

    /// Tenants with customers waiting to be rescored and not leased by a
    /// worker (or leased, but the lease expired), leaving out the tenants
    /// the worker must not touch now (see `worker_may_run`). Deliberately
    /// cross-tenant: only the background worker calls it, and it then
    /// handles each tenant through tenant-scoped calls.
    pub async fn tenants_with_queued_rescores(&self) -> StoreResult<Vec<TenantId>> {
        let now = now_ms();
        sqlx::query(&format!(
            "SELECT DISTINCT tenant_id FROM rescore_queue q \
             WHERE (lease_expires_at IS NULL OR lease_expires_at <= $1) AND {} ORDER BY tenant_id",
            worker_may_run("q.tenant_id", "$2")
        ))
        .bind(now)
        .bind(now - JOB_STALE_MS)
        .fetch_all(self.db().pool())
        .await?
        .iter()
        .map(|row| Ok(TenantId::from_row(row.try_get(0)?)))
        .collect()
    }

    /// Leases up to `limit` of a tenant's oldest queued customers to `node`
    /// for `lease_ms`: entries leased by another claim are skipped until
    /// their lease expires, so concurrent workers (of this node or others)
    /// never get the same customer. Acknowledge with [`Store::ack_rescores`]
    /// or hand back with [`Store::release_rescores`].
    pub async fn claim_rescores(
        &self,
        tenant: &TenantId,
        node: &str,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<RescoreClaim> {
        let limit = i64::try_from(limit.clamp(1, MAX_HISTORY_CHUNK)).unwrap_or(1);
        let now = now_ms();
        let expires = now.saturating_add(lease_ms.max(1));
        // Same shape as `claim_messages`: on PostgreSQL the locking select
        // is a CTE (evaluated once) with SKIP LOCKED, so concurrent claimers
        // pass over each other's rows instead of waiting for them; a row
        // another claim leased and committed meanwhile fails the re-checked
        // WHERE. On SQLite `begin_write` makes the claim the only writer.
        let due = format!(
            "SELECT customer_id FROM rescore_queue WHERE tenant_id = $1 \
             AND (lease_expires_at IS NULL OR lease_expires_at <= $3) AND {} \
             ORDER BY enqueued_at, customer_id LIMIT $4",
            worker_may_run("$1", "$6")
        );
        let update = "UPDATE rescore_queue SET lease_owner = $2, lease_expires_at = $5 WHERE tenant_id = $1";
        let returning = "RETURNING customer_id, generation";
        let sql = match self.db().backend() {
            Backend::Postgres => format!(
                "WITH due AS ({due} FOR UPDATE SKIP LOCKED) \
                 {update} AND customer_id IN (SELECT customer_id FROM due) {returning}"
            ),
            Backend::Sqlite => format!("{update} AND customer_id IN ({due}) {returning}"),
        };
        let mut tx = self.db().begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(node)
            .bind(now)
            .bind(limit)
            .bind(expires)
            .bind(now - JOB_STALE_MS)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut entries = rows
            .iter()
            .map(|row| {
                Ok(QueuedRescore {
                    customer_id: row.try_get(0)?,
                    generation: row.try_get(1)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        entries.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
        Ok(RescoreClaim {
            node: node.to_string(),
            lease_expires_at: expires,
            entries,
        })
    }

    /// Removes the claimed entries that were rescored, if the claim still
    /// holds their lease and nobody enqueued them again since. An entry
    /// re-enqueued meanwhile (bumped generation) stays queued and loses the
    /// lease, so the next pass rescores it at once; an entry whose lease was
    /// taken over is left to the claim that took it. Returns how many were
    /// removed.
    pub async fn ack_rescores(&self, tenant: &TenantId, claim: &RescoreClaim) -> StoreResult<u64> {
        self.settle_rescores(tenant, claim, true).await
    }

    /// Hands the claimed entries back unrescored (the worker failed), so the
    /// next pass of any node may take them without waiting for the lease.
    pub async fn release_rescores(&self, tenant: &TenantId, claim: &RescoreClaim) -> StoreResult<()> {
        self.settle_rescores(tenant, claim, false).await.map(|_| ())
    }

    async fn settle_rescores(&self, tenant: &TenantId, claim: &RescoreClaim, done: bool) -> StoreResult<u64> {
        // Fenced on (owner, expiry): the expiry is unique to one claim in
        // practice, so even a later claim of the same node is not ours.
        let ours = "tenant_id = $1 AND customer_id = $2 AND lease_owner = $3 AND lease_expires_at = $4";
        let delete = format!("DELETE FROM rescore_queue WHERE {ours} AND generation = $5");
        let unlease = format!("UPDATE rescore_queue SET lease_owner = NULL, lease_expires_at = NULL WHERE {ours}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result: StoreResult<u64> = async {
                let mut tx = self.db().begin_write().await?;
                let mut removed = 0;
                for e in &claim.entries {
                    if done {
                        let deleted = sqlx::query(&delete)
                            .bind(tenant.as_str())
                            .bind(e.customer_id.as_str())
                            .bind(claim.node.as_str())
                            .bind(claim.lease_expires_at)
                            .bind(e.generation)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        removed += deleted;
                        if deleted > 0 {
                            continue;
                        }
                    }
                    sqlx::query(&unlease)
                        .bind(tenant.as_str())
                        .bind(e.customer_id.as_str())
                        .bind(claim.node.as_str())
                        .bind(claim.lease_expires_at)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(removed)
            }
            .await;
            match result {
                Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    /// Removes the given queue entries if their generation is unchanged,
    /// whoever holds their lease: a job that stored scores computed from a
    /// read made after these generations were seen covers them (see
    /// [`Store::scoring_histories_page_with_queue`]). A worker holding one
    /// then acknowledges nothing. Returns how many were removed.
    pub async fn clear_rescores(&self, tenant: &TenantId, entries: &[QueuedRescore]) -> StoreResult<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result: StoreResult<u64> = async {
                let mut tx = self.db().begin_write().await?;
                let mut removed = 0;
                // Many entries per statement (a job clears up to a chunk's
                // worth at a time): one round trip each, primary-key lookups.
                for chunk in entries.chunks(INSERT_ROWS_PER_STATEMENT) {
                    let terms: Vec<String> = (0..chunk.len())
                        .map(|i| format!("(customer_id = ${} AND generation = ${})", 2 + 2 * i, 3 + 2 * i))
                        .collect();
                    let sql = format!(
                        "DELETE FROM rescore_queue WHERE tenant_id = $1 AND ({})",
                        terms.join(" OR ")
                    );
                    let mut q = sqlx::query(&sql).bind(tenant.as_str());
                    for e in chunk {
                        q = q.bind(e.customer_id.as_str()).bind(e.generation);
                    }
                    removed += q.execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(removed)
            }
            .await;
            match result {
                Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    /// Pauses (or resumes) the background rescore worker for the tenant, on
    /// every node. Idempotent; returns the new state.
    pub async fn set_rescore_paused(&self, tenant: &TenantId, paused: bool) -> StoreResult<RescoreWorkerState> {
        if paused {
            sqlx::query(
                "INSERT INTO rescore_pauses (tenant_id, paused_at) VALUES ($1, $2) \
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(now_ms())
            .execute(self.db().pool())
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound { entity: "tenant" },
                other => other.into(),
            })?;
        } else {
            sqlx::query("DELETE FROM rescore_pauses WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .execute(self.db().pool())
                .await?;
        }
        self.rescore_worker_state(tenant).await
    }

    /// Whether the tenant paused the worker, how many customers wait, and
    /// the running job the worker waits for, if any.
    pub async fn rescore_worker_state(&self, tenant: &TenantId) -> StoreResult<RescoreWorkerState> {
        let paused_at: Option<i64> = sqlx::query("SELECT paused_at FROM rescore_pauses WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(self.db().pool())
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let queued: i64 = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM rescore_queue WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(self.db().pool())
            .await?
            .try_get(0)?;
        let running_job: Option<String> = sqlx::query(
            "SELECT id FROM scoring_jobs WHERE tenant_id = $1 AND status = 'running' AND updated_at > $2 \
             ORDER BY id LIMIT 1",
        )
        .bind(tenant.as_str())
        .bind(now_ms() - JOB_STALE_MS)
        .fetch_optional(self.db().pool())
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
        Ok(RescoreWorkerState {
            paused: paused_at.is_some(),
            paused_at: paused_at.map(from_millis),
            queued,
            running_job,
        })
    }

    // -----------------------------------------------------------------
    // Jobs
}
