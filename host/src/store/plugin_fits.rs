//! Store: each plugin's last fit per tenant, and a paged read of what the
//! plugin kept in its key-value store, so a fitted model (BG/NBD
//! parameters, co-purchase rules with their support, confidence and lift)
//! can be inspected through the API rather than in the database.
//!
//! A fit's summary is whatever JSON the plugin returned; it is kept as text
//! (the runtime already checked it is JSON) and replaced by the next fit.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{Store, StoreError, StoreResult, TenantId, from_millis, json_column};

/// A fit to record: the plugin's JSON summary, or why it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFit<'a> {
    pub plugin_id: &'a str,
    pub fitted_at: i64,
    /// `Ok(summary JSON text)` or `Err((code, message))`.
    pub result: Result<&'a str, (&'a str, &'a str)>,
    pub job_id: Option<&'a str>,
    pub as_of: Option<i64>,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FitStatus {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FitError {
    pub code: String,
    pub message: String,
}

/// A plugin's last fit for the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PluginFit {
    pub status: FitStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub fitted_at: OffsetDateTime,
    /// What the plugin's fit returned (its own JSON); `null` if it failed.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<Value>,
    pub error: Option<FitError>,
    /// The scoring job that ran it; `null` for a cross-sell fit.
    pub job_id: Option<String>,
    /// The date the fit's population was cut at; `null`: none.
    #[serde(with = "time::serde::rfc3339::option")]
    pub as_of: Option<OffsetDateTime>,
    pub duration_ms: i64,
}

/// How a kv value is shown: JSON as itself, other UTF-8 text as a string,
/// anything else as base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KvEncoding {
    Json,
    Text,
    Base64,
}

/// One key-value entry a plugin kept for the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct KvEntry {
    pub key: String,
    pub encoding: KvEncoding,
    #[schema(value_type = Object)]
    pub value: Value,
    /// Size of the stored value.
    pub bytes: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn decode_value(bytes: Vec<u8>) -> (KvEncoding, Value) {
    match String::from_utf8(bytes) {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(json) => (KvEncoding::Json, json),
            Err(_) => (KvEncoding::Text, Value::String(text)),
        },
        Err(e) => (KvEncoding::Base64, Value::String(STANDARD.encode(e.into_bytes()))),
    }
}

impl Store {
    /// Records a plugin's fit, replacing the previous one.
    pub async fn record_plugin_fit(&self, tenant: &TenantId, fit: NewFit<'_>) -> StoreResult<()> {
        let (status, summary, code, message) = match fit.result {
            Ok(summary) => ("succeeded", Some(summary), None, None),
            Err((code, message)) => ("failed", None, Some(code), Some(message)),
        };
        sqlx::query(
            "INSERT INTO plugin_fits (tenant_id, plugin_id, fitted_at, status, summary, error_code, error_message, \
             job_id, as_of, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET fitted_at = excluded.fitted_at, \
             status = excluded.status, summary = excluded.summary, error_code = excluded.error_code, \
             error_message = excluded.error_message, job_id = excluded.job_id, as_of = excluded.as_of, \
             duration_ms = excluded.duration_ms",
        )
        .bind(tenant.as_str())
        .bind(fit.plugin_id)
        .bind(fit.fitted_at)
        .bind(status)
        .bind(summary)
        .bind(code)
        .bind(message)
        .bind(fit.job_id)
        .bind(fit.as_of)
        .bind(fit.duration_ms)
        .execute(self.db().pool())
        .await?;
        Ok(())
    }

    /// The plugin's last fit for the tenant, if it was ever fitted.
    pub async fn plugin_fit(&self, tenant: &TenantId, plugin: &str) -> StoreResult<Option<PluginFit>> {
        let Some(row) = sqlx::query(
            "SELECT fitted_at, status, summary, error_code, error_message, job_id, as_of, duration_ms \
             FROM plugin_fits WHERE tenant_id = $1 AND plugin_id = $2",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .fetch_optional(self.db().pool())
        .await?
        else {
            return Ok(None);
        };
        let status = match row.try_get::<String, _>("status")?.as_str() {
            "succeeded" => FitStatus::Succeeded,
            "failed" => FitStatus::Failed,
            other => return Err(StoreError::Corrupt(format!("unknown fit status {other:?}"))),
        };
        let summary = row
            .try_get::<Option<String>, _>("summary")?
            .map(|text| json_column(&text))
            .transpose()?;
        let error = match (
            row.try_get::<Option<String>, _>("error_code")?,
            row.try_get::<Option<String>, _>("error_message")?,
        ) {
            (Some(code), message) => Some(FitError {
                code,
                message: message.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(Some(PluginFit {
            status,
            fitted_at: from_millis(row.try_get("fitted_at")?),
            summary,
            error,
            job_id: row.try_get("job_id")?,
            as_of: row.try_get::<Option<i64>, _>("as_of")?.map(from_millis),
            duration_ms: row.try_get("duration_ms")?,
        }))
    }

    /// A page of the plugin's key-value entries for the tenant, in key
    /// order, after key `after`, at most `limit`.
    pub async fn plugin_kv_page(
        &self,
        tenant: &TenantId,
        plugin: &str,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<KvEntry>> {
        let rows = sqlx::query(
            "SELECT key, value, updated_at FROM plugin_kv WHERE tenant_id = $1 AND plugin_id = $2 \
             AND ($3 IS NULL OR key > $3) ORDER BY key LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(after)
        .bind(limit.max(1))
        .fetch_all(self.db().pool())
        .await?;
        rows.iter()
            .map(|row| {
                let bytes: Vec<u8> = row.try_get("value")?;
                let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
                let (encoding, value) = decode_value(bytes);
                Ok(KvEntry {
                    key: row.try_get("key")?,
                    encoding,
                    value,
                    bytes: size,
                    updated_at: from_millis(row.try_get("updated_at")?),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_as_json_text_or_base64() {
        assert_eq!(
            decode_value(br#"{"a":1}"#.to_vec()),
            (KvEncoding::Json, serde_json::json!({ "a": 1 }))
        );
        assert_eq!(
            decode_value(b"plain words".to_vec()),
            (KvEncoding::Text, Value::String("plain words".into()))
        );
        assert_eq!(
            decode_value(vec![0xff, 0x00]),
            (KvEncoding::Base64, Value::String("/wA=".into()))
        );
    }
}
