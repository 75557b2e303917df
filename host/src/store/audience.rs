//! Store: audiences by segment. Relationship marketing treats customers by
//! level: a message trigger or a catalogue reward may be limited to the
//! customers whose stored segment of one scoring plugin is in a list (the
//! relationship level of `relationship-levels`, say). This is the one
//! definition of that rule, its validation and its check, so a trigger and
//! a reward can never disagree on who is in.

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::{StoreError, StoreResult, TenantId};

/// Customers limited to: those whose stored segment of `plugin` is one of
/// `segments`. A customer without a score of that plugin is outside every
/// audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// A scoring plugin, e.g. `relationship-levels`.
    pub plugin: String,
    /// Its segments, e.g. `["proactive", "partnership"]` (1 to 20).
    pub segments: Vec<String>,
}

impl Audience {
    /// 422 for an empty plugin or a segment list out of bounds.
    pub fn validate(&self) -> StoreResult<()> {
        if self.plugin.trim().is_empty() {
            return Err(StoreError::invalid("audience.plugin", "must name a scoring plugin"));
        }
        if self.segments.is_empty()
            || self.segments.len() > 20
            || self.segments.iter().any(|s| s.is_empty() || s.len() > 100)
        {
            return Err(StoreError::invalid(
                "audience.segments",
                "1 to 20 segment names of 1 to 100 bytes",
            ));
        }
        Ok(())
    }

    /// Whether the customer's stored segment of the audience's plugin is one
    /// of its segments (read on `conn`, inside the caller's transaction).
    pub(in crate::store) async fn includes_tx(
        &self,
        conn: &mut AnyConnection,
        tenant: &TenantId,
        customer_id: &str,
    ) -> StoreResult<bool> {
        let segment: Option<Option<String>> = sqlx::query(
            "SELECT segment FROM customer_scores WHERE tenant_id = $1 AND customer_id = $2 AND plugin_id = $3",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .bind(&self.plugin)
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| row.try_get("segment"))
        .transpose()?;
        Ok(segment.flatten().is_some_and(|s| self.segments.contains(&s)))
    }

    /// As stored in a TEXT column (JSON).
    pub(in crate::store) fn to_column(audience: Option<&Audience>) -> StoreResult<Option<String>> {
        audience
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("cannot encode an audience: {e}")))
    }

    /// Read back from [`Audience::to_column`]'s column.
    pub(in crate::store) fn from_column(text: Option<String>) -> StoreResult<Option<Audience>> {
        text.map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("stored audience: {e}")))
    }
}
