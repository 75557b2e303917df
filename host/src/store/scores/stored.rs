//! Stored scores: saving a batch of scores (current score and history in one
//! transaction, the newer input wins), and reading them back per customer,
//! per segment and per plugin (paged export). Apart from the queue and jobs
//! because it is what every score, whoever computed it, goes through.

use std::collections::HashMap;

use sqlx::{AnyConnection, Row};

use super::{
    CustomerScore, INSERT_ROWS_PER_STATEMENT, MAX_HISTORY_CHUNK, NewScore, SCORE_COLUMNS, SegmentSize, StoredScore,
    WRITE_ATTEMPTS, components_json, is_foreign_key_violation, list_placeholders, retryable, row_placeholders,
    score_from_row,
};
use crate::store::{Store, StoreError, StoreResult, TenantId, new_id};

/// Removes everything scoring keeps about a customer (current scores,
/// history, queue entry), for deleting the customer in the same transaction.
pub async fn delete_customer_scores_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
) -> StoreResult<()> {
    for table in ["customer_scores", "customer_score_history", "rescore_queue"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE tenant_id = $1 AND customer_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The stored (value, computed_at) of each (customer, plugin) in `chunk`.
async fn previous_scores(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &TenantId,
    chunk: &[&NewScore],
) -> StoreResult<HashMap<(String, String), (f64, i64)>> {
    let sql = format!(
        "SELECT customer_id, plugin_id, value, computed_at FROM customer_scores WHERE tenant_id = $1 \
         AND customer_id IN ({})",
        list_placeholders(2, chunk.len())
    );
    let mut q = sqlx::query(&sql).bind(tenant.as_str());
    for s in chunk {
        q = q.bind(s.customer_id.as_str());
    }
    let mut found = HashMap::new();
    for row in q.fetch_all(&mut **tx).await? {
        found.insert(
            (row.try_get(0)?, row.try_get(1)?),
            (row.try_get::<f64, _>(2)?, row.try_get::<i64, _>(3)?),
        );
    }
    Ok(found)
}

impl Store {
    /// Stores scores: upserts each (customer, plugin)'s current score unless
    /// a newer one is stored, and appends every score to the history, all in
    /// one transaction. Scores of customers deleted meanwhile are dropped.
    /// Returns how many scores were stored.
    pub async fn save_scores(&self, tenant: &TenantId, scores: &[NewScore]) -> StoreResult<u64> {
        if scores.is_empty() {
            return Ok(0);
        }
        // One row per (customer, plugin), the newest, in key order: a
        // multi-row upsert may not touch a row twice (PostgreSQL), and a
        // fixed lock order keeps concurrent writers from deadlocking.
        let mut rows: Vec<&NewScore> = scores.iter().collect();
        rows.sort_by(|a, b| {
            (a.customer_id.as_str(), a.plugin_id.as_str(), a.computed_at).cmp(&(
                b.customer_id.as_str(),
                b.plugin_id.as_str(),
                b.computed_at,
            ))
        });
        let mut current: Vec<&NewScore> = Vec::with_capacity(rows.len());
        for row in &rows {
            match current.last_mut() {
                Some(last) if last.customer_id == row.customer_id && last.plugin_id == row.plugin_id => *last = row,
                _ => current.push(row),
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.save_scores_once(tenant, &current, &rows).await {
                Ok(n) => return Ok(n),
                Err(e) if is_foreign_key_violation(&e) => {
                    // A customer was deleted after its history was read:
                    // keep the others' scores.
                    let existing = self.existing_customers(tenant, &current).await?;
                    let current: Vec<&NewScore> = current
                        .iter()
                        .copied()
                        .filter(|s| existing.contains_key(s.customer_id.as_str()))
                        .collect();
                    let rows: Vec<&NewScore> = rows
                        .iter()
                        .copied()
                        .filter(|s| existing.contains_key(s.customer_id.as_str()))
                        .collect();
                    return self.save_scores_once(tenant, &current, &rows).await;
                }
                Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn existing_customers(&self, tenant: &TenantId, scores: &[&NewScore]) -> StoreResult<HashMap<String, ()>> {
        let mut ids: Vec<String> = scores.iter().map(|s| s.customer_id.clone()).collect();
        ids.dedup();
        let mut existing = HashMap::new();
        for chunk in ids.chunks(MAX_HISTORY_CHUNK) {
            let sql = format!(
                "SELECT id FROM customers WHERE tenant_id = $1 AND id IN ({})",
                list_placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(tenant.as_str());
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(self.db().pool()).await? {
                existing.insert(row.try_get::<String, _>(0)?, ());
            }
        }
        Ok(existing)
    }

    async fn save_scores_once(&self, tenant: &TenantId, current: &[&NewScore], all: &[&NewScore]) -> StoreResult<u64> {
        // Bind values per row of the current-score and the history INSERTs.
        const WIDTH: usize = 12;
        const HISTORY_WIDTH: usize = 13;
        let backend = self.db().backend();
        let mut tx = self.db().begin_write().await?;
        // Triggers on score crossings need the values being replaced; read
        // them only when the tenant has such a trigger.
        let triggers = crate::store::triggers::enabled_triggers_tx(&mut tx, tenant, "score_crossed").await?;
        let mut stored = 0;
        for chunk in current.chunks(INSERT_ROWS_PER_STATEMENT) {
            let previous = if triggers.is_empty() {
                HashMap::new()
            } else {
                previous_scores(&mut tx, tenant, chunk).await?
            };
            let values: Vec<String> = (0..chunk.len())
                .map(|i| row_placeholders(backend, 1 + i * WIDTH, WIDTH))
                .collect();
            let sql = format!(
                "INSERT INTO customer_scores (tenant_id, customer_id, plugin_id, value, label, segment, explanation, \
                 components, computed_at, job_id, as_of, plugin_version) VALUES {} \
                 ON CONFLICT (tenant_id, customer_id, plugin_id) DO UPDATE SET value = excluded.value, \
                 label = excluded.label, segment = excluded.segment, explanation = excluded.explanation, \
                 components = excluded.components, computed_at = excluded.computed_at, job_id = excluded.job_id, \
                 as_of = excluded.as_of, plugin_version = excluded.plugin_version \
                 WHERE customer_scores.computed_at <= excluded.computed_at",
                values.join(", ")
            );
            let components: Vec<String> = chunk.iter().map(|s| components_json(&s.components)).collect();
            let mut q = sqlx::query(&sql);
            for (s, components) in chunk.iter().zip(&components) {
                q = q
                    .bind(tenant.as_str())
                    .bind(s.customer_id.as_str())
                    .bind(s.plugin_id.as_str())
                    .bind(s.value)
                    .bind(s.label.as_deref())
                    .bind(s.segment.as_deref())
                    .bind(s.explanation.as_str())
                    .bind(components.as_str())
                    .bind(s.computed_at)
                    .bind(s.job_id.as_deref())
                    .bind(s.as_of)
                    .bind(s.plugin_version.as_deref());
            }
            stored += q.execute(&mut *tx).await?.rows_affected();
            if !triggers.is_empty() {
                let changes: Vec<crate::store::triggers::ScoreChange> = chunk
                    .iter()
                    .filter_map(|s| {
                        let before = previous.get(&(s.customer_id.clone(), s.plugin_id.clone()));
                        // An older score than the stored one was not written.
                        match before {
                            Some((_, at)) if *at > s.computed_at => None,
                            _ => Some(crate::store::triggers::ScoreChange {
                                customer_id: &s.customer_id,
                                plugin_id: &s.plugin_id,
                                computed_at: s.computed_at,
                                previous: before.map(|(value, _)| *value),
                                value: s.value,
                            }),
                        }
                    })
                    .collect();
                crate::store::triggers::on_scores_tx(&mut tx, tenant, &triggers, &changes).await?;
            }
        }
        for chunk in all.chunks(INSERT_ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| row_placeholders(backend, 1 + i * HISTORY_WIDTH, HISTORY_WIDTH))
                .collect();
            let sql = format!(
                "INSERT INTO customer_score_history (tenant_id, customer_id, plugin_id, computed_at, id, value, label, \
                 segment, explanation, components, job_id, as_of, plugin_version) VALUES {}",
                values.join(", ")
            );
            let rows: Vec<(String, String)> = chunk
                .iter()
                .map(|s| (new_id(), components_json(&s.components)))
                .collect();
            let mut q = sqlx::query(&sql);
            for (s, (id, components)) in chunk.iter().zip(&rows) {
                q = q
                    .bind(tenant.as_str())
                    .bind(s.customer_id.as_str())
                    .bind(s.plugin_id.as_str())
                    .bind(s.computed_at)
                    .bind(id.as_str())
                    .bind(s.value)
                    .bind(s.label.as_deref())
                    .bind(s.segment.as_deref())
                    .bind(s.explanation.as_str())
                    .bind(components.as_str())
                    .bind(s.job_id.as_deref())
                    .bind(s.as_of)
                    .bind(s.plugin_version.as_deref());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn require_customer(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<()> {
        sqlx::query("SELECT id FROM customers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(customer_id)
            .fetch_optional(self.db().pool())
            .await?
            .ok_or(StoreError::NotFound { entity: "customer" })?;
        Ok(())
    }

    /// A customer's current scores, one per plugin (or just `plugin`'s), by
    /// plugin id. 404 for a customer the tenant does not have.
    pub async fn customer_scores(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        plugin: Option<&str>,
    ) -> StoreResult<Vec<StoredScore>> {
        self.require_customer(tenant, customer_id).await?;
        let filter = if plugin.is_some() { " AND plugin_id = $3" } else { "" };
        let sql = format!(
            "SELECT {SCORE_COLUMNS} FROM customer_scores WHERE tenant_id = $1 AND customer_id = $2{filter} \
             ORDER BY plugin_id"
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str()).bind(customer_id);
        if let Some(p) = plugin {
            q = q.bind(p);
        }
        q.fetch_all(self.db().pool())
            .await?
            .iter()
            .map(score_from_row)
            .collect()
    }

    /// A customer's score history, newest first, at most `limit` entries.
    pub async fn customer_score_history(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        plugin: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<StoredScore>> {
        self.require_customer(tenant, customer_id).await?;
        let (filter, limit_at) = if plugin.is_some() {
            (" AND plugin_id = $3", "$4")
        } else {
            ("", "$3")
        };
        let sql = format!(
            "SELECT {SCORE_COLUMNS} FROM customer_score_history WHERE tenant_id = $1 AND customer_id = $2{filter} \
             ORDER BY computed_at DESC, id DESC LIMIT {limit_at}"
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str()).bind(customer_id);
        if let Some(p) = plugin {
            q = q.bind(p);
        }
        q.bind(limit)
            .fetch_all(self.db().pool())
            .await?
            .iter()
            .map(score_from_row)
            .collect()
    }

    /// How many customers each plugin (or just `plugin`) put in each
    /// segment, largest first.
    pub async fn segment_sizes(&self, tenant: &TenantId, plugin: Option<&str>) -> StoreResult<Vec<SegmentSize>> {
        let filter = if plugin.is_some() { " AND plugin_id = $2" } else { "" };
        let sql = format!(
            "SELECT plugin_id, segment, CAST(COUNT(*) AS BIGINT) AS customers FROM customer_scores \
             WHERE tenant_id = $1{filter} GROUP BY plugin_id, segment ORDER BY plugin_id, customers DESC, segment"
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str());
        if let Some(p) = plugin {
            q = q.bind(p);
        }
        q.fetch_all(self.db().pool())
            .await?
            .iter()
            .map(|row| {
                Ok(SegmentSize {
                    plugin: row.try_get("plugin_id")?,
                    segment: row.try_get("segment")?,
                    customers: row.try_get("customers")?,
                })
            })
            .collect()
    }

    /// A page of `plugin`'s current scores, in customer id order, after
    /// customer `after`, at most `limit`: one index range scan joined with
    /// the customers (for their external ids).
    pub async fn plugin_scores_page(
        &self,
        tenant: &TenantId,
        plugin: &str,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<CustomerScore>> {
        let rows = sqlx::query(
            "SELECT s.customer_id, c.external_id, s.plugin_id, s.value, s.label, s.segment, s.explanation, \
             s.components, s.computed_at, s.job_id, s.as_of, s.plugin_version \
             FROM customer_scores s JOIN customers c ON c.tenant_id = s.tenant_id AND c.id = s.customer_id \
             WHERE s.tenant_id = $1 AND s.plugin_id = $2 AND s.customer_id > $3 ORDER BY s.customer_id LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(after.unwrap_or(""))
        .bind(limit.max(1))
        .fetch_all(self.db().pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CustomerScore {
                    customer_id: row.try_get("customer_id")?,
                    external_id: row.try_get("external_id")?,
                    score: score_from_row(row)?,
                })
            })
            .collect()
    }

    /// `plugin`'s current score of each of `customer_ids` that has one, by
    /// customer id (at most [`MAX_HISTORY_CHUNK`] ids).
    pub async fn plugin_scores_of(
        &self,
        tenant: &TenantId,
        plugin: &str,
        customer_ids: &[String],
    ) -> StoreResult<HashMap<String, StoredScore>> {
        if customer_ids.is_empty() {
            return Ok(HashMap::new());
        }
        if customer_ids.len() > MAX_HISTORY_CHUNK {
            return Err(StoreError::invalid(
                "customer_ids",
                format!("at most {MAX_HISTORY_CHUNK} customers per read"),
            ));
        }
        let sql = format!(
            "SELECT customer_id, {SCORE_COLUMNS} FROM customer_scores WHERE tenant_id = $1 AND plugin_id = $2 \
             AND customer_id IN ({})",
            list_placeholders(3, customer_ids.len())
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str()).bind(plugin);
        for id in customer_ids {
            q = q.bind(id.as_str());
        }
        let mut found = HashMap::new();
        for row in q.fetch_all(self.db().pool()).await? {
            found.insert(row.try_get::<String, _>("customer_id")?, score_from_row(&row)?);
        }
        Ok(found)
    }
}
