//! The audit log: one append-only record per admin action (who, when, which
//! tenant, what, and the state before and after), read back by `GET
//! /v1/audit`.
//!
//! Every admin action goes through one function, [`record_tx`], on the
//! action's own connection where the action has a transaction (so the
//! record commits or rolls back with the change it describes), or
//! [`Store::record_audit`] after an action that commits on its own. The
//! table refuses UPDATE and DELETE in the database itself (triggers in
//! migration 0060), and nothing here offers either.
//!
//! Secrets never reach this table: configs hold secret *references*, and
//! [`redact`] blanks any value under a key that names a credential, as a
//! second line of defence for documents a caller did not think about.

use serde::Serialize;
use serde_json::Value;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::sql::{Arg, Sql, page_limit};
use super::{Page, Store, StoreResult, TenantId, cursor, from_millis, json_column, new_id, now_ms};

/// What replaces a redacted value.
pub const REDACTED: &str = "[redacted]";

/// One action to record. `tenant` is `None` for platform actions.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub tenant: Option<&'a TenantId>,
    /// The API key that acted; `None` for the operator's command line.
    pub actor_key_id: Option<&'a str>,
    /// Dotted verb, e.g. `plugin.config`, `key.revoke`, `manifest.reload`.
    pub action: &'a str,
    /// What was acted on, e.g. `plugin:rfm`, `key:<id>`, `customer:<id>`.
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// A recorded action as `GET /v1/audit` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditRecord {
    pub id: String,
    /// Null for platform actions.
    pub tenant_id: Option<String>,
    /// The acting API key's id; null when the operator's command line acted.
    pub actor_key_id: Option<String>,
    pub action: String,
    pub target: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    /// JSON pointers of the values that differ between `before` and `after`.
    pub changes: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
}

/// Whose records a reader sees.
#[derive(Debug, Clone, Copy)]
pub enum AuditScope<'a> {
    Tenant(&'a TenantId),
    /// Platform actions (no tenant).
    Platform,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor_key_id: Option<String>,
    /// Inclusive, epoch ms.
    pub from_ms: Option<i64>,
    /// Exclusive, epoch ms.
    pub to_ms: Option<i64>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Key names whose values are credentials wherever they appear.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "token",
        "api_key",
        "apikey",
        "credential",
        "private_key",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// Blanks credential-looking values (see [`is_secret_key`]). A secret
/// *reference* (`{"secret": "env:NAME"}`) names where the secret lives, not
/// the secret, and is kept so the log shows which one was configured.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let is_reference = map.len() == 1 && map.get("secret").is_some_and(Value::is_string);
            if is_reference {
                return;
            }
            for (key, item) in map.iter_mut() {
                let is_reference = item
                    .as_object()
                    .is_some_and(|m| m.len() == 1 && m.get("secret").is_some_and(Value::is_string));
                if is_secret_key(key) && !is_reference && !item.is_null() {
                    *item = Value::String(REDACTED.into());
                } else {
                    redact(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// JSON pointers (RFC 6901) of the leaves that differ between two documents.
pub fn changes(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    fn walk(a: Option<&Value>, b: Option<&Value>, at: &mut String, out: &mut Vec<String>) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for key in keys {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&key.replace('~', "~0").replace('/', "~1"));
                    walk(x.get(key), y.get(key), at, out);
                    at.truncate(len);
                }
            }
            (x, y) if x != y => out.push(if at.is_empty() { "/".into() } else { at.clone() }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(before, after, &mut String::new(), &mut out);
    out
}

fn json_text(value: Option<&Value>) -> Option<String> {
    value.map(|v| {
        let mut v = v.clone();
        redact(&mut v);
        v.to_string()
    })
}

/// Appends `entry` on `conn` (inside the caller's transaction, if any), with
/// secrets redacted. Returns the record's id.
pub async fn record_tx(conn: &mut AnyConnection, entry: &AuditEntry<'_>) -> StoreResult<String> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, actor_key_id, action, target, before, after, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(entry.tenant.map(TenantId::as_str))
    .bind(entry.actor_key_id)
    .bind(entry.action)
    .bind(&entry.target)
    .bind(json_text(entry.before.as_ref()))
    .bind(json_text(entry.after.as_ref()))
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

fn record_from_row(row: &sqlx::any::AnyRow) -> StoreResult<AuditRecord> {
    let before: Option<String> = row.try_get("before")?;
    let after: Option<String> = row.try_get("after")?;
    let before = before.as_deref().map(json_column).transpose()?;
    let after = after.as_deref().map(json_column).transpose()?;
    Ok(AuditRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        actor_key_id: row.try_get("actor_key_id")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        changes: changes(before.as_ref(), after.as_ref()),
        before,
        after,
        at: from_millis(row.try_get("created_at")?),
    })
}

impl Store {
    /// Appends `entry` in a transaction of its own: for actions whose store
    /// call commits by itself. Prefer [`record_tx`] inside the action's
    /// transaction where there is one.
    pub async fn record_audit(&self, entry: &AuditEntry<'_>) -> StoreResult<String> {
        let mut conn = self.db().pool().acquire().await?;
        record_tx(&mut conn, entry).await
    }

    /// Records visible in `scope`, newest first, filtered, one page.
    pub async fn audit_page(&self, scope: AuditScope<'_>, filter: &AuditFilter) -> StoreResult<Page<AuditRecord>> {
        let limit = page_limit(filter.limit)?;
        let mut sql = Sql::new(
            "SELECT id, tenant_id, actor_key_id, action, target, before, after, created_at FROM audit_log WHERE ",
        );
        match scope {
            AuditScope::Tenant(tenant) => {
                let p = sql.arg(Arg::Text(tenant.0.clone()));
                sql.push(&format!("tenant_id = {p}"));
            }
            AuditScope::Platform => sql.push("tenant_id IS NULL"),
        }
        if let Some(c) = &filter.cursor {
            let (before_id,): (String,) = cursor::decode(c)?;
            let p = sql.arg(Arg::Text(before_id));
            sql.push(&format!(" AND id < {p}"));
        }
        if let Some(action) = &filter.action {
            let p = sql.arg(Arg::Text(action.clone()));
            sql.push(&format!(" AND action = {p}"));
        }
        if let Some(actor) = &filter.actor_key_id {
            let p = sql.arg(Arg::Text(actor.clone()));
            sql.push(&format!(" AND actor_key_id = {p}"));
        }
        if let Some(from) = filter.from_ms {
            let p = sql.arg(Arg::Int(from));
            sql.push(&format!(" AND created_at >= {p}"));
        }
        if let Some(to) = filter.to_ms {
            let p = sql.arg(Arg::Int(to));
            sql.push(&format!(" AND created_at < {p}"));
        }
        let p = sql.arg(Arg::Int(limit + 1));
        // Ids are UUIDv7: by id is by time, and a stable cursor.
        sql.push(&format!(" ORDER BY id DESC LIMIT {p}"));
        let rows = sql.query().fetch_all(self.db().pool()).await?;
        let mut items = rows.iter().map(record_from_row).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|r| cursor::encode(&(r.id.clone(),)))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn redacts_credentials_but_keeps_references() {
        let mut v = json!({ "signing_secret": "whsec_x", "api": { "password": "p" },
                            "ref_secret": { "secret": "env:RAPPORT_SECRET_X" }, "window": 30 });
        redact(&mut v);
        assert_eq!(
            v,
            json!({ "signing_secret": REDACTED, "api": { "password": REDACTED },
                    "ref_secret": { "secret": "env:RAPPORT_SECRET_X" }, "window": 30 })
        );
    }

    #[test]
    fn changes_are_pointers_to_differing_leaves() {
        let a = json!({ "a": 1, "b": { "c": 2, "d": 3 } });
        let b = json!({ "a": 1, "b": { "c": 5 }, "e/f": true });
        assert_eq!(changes(Some(&a), Some(&b)), vec!["/b/c", "/b/d", "/e~1f"]);
        assert_eq!(changes(None, Some(&b)), vec!["/"]);
    }
}
