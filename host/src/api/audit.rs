//! `GET /v1/audit`: the audit log (`store::audit`). A tenant admin reads
//! its tenant's records; a platform admin reads the platform's own (tenants,
//! platform keys, manifest reloads). Read-only on purpose: the log has no
//! update or delete route, and the table refuses both.

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Query};
use super::{ApiResult, AppState, Error};
use crate::store::audit::{AuditEntry, AuditFilter, AuditRecord, AuditScope};
use crate::store::tenants::Role;
use crate::store::{Page, TenantId, millis};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action, e.g. `plugin.config`, `key.revoke`.
    pub action: Option<String>,
    /// Only actions of this API key id.
    pub actor: Option<String>,
    /// From this time (RFC 3339), inclusive.
    pub from: Option<String>,
    /// Before this time (RFC 3339), exclusive.
    pub to: Option<String>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Records an admin action that has committed on its own (its store call
/// owns its transaction), for the calling key. `before`/`after` are
/// serialized and redacted (`store::audit::redact`); pass only what says
/// what changed, never personal data (a GDPR record names the customer id).
pub async fn record<B: serde::Serialize, A: serde::Serialize>(
    s: &AppState,
    auth: &Auth,
    tenant: Option<&TenantId>,
    action: &str,
    target: String,
    before: Option<&B>,
    after: Option<&A>,
) -> ApiResult<()> {
    let json = |v: Option<serde_json::Value>| v.filter(|v| !v.is_null());
    s.store
        .record_audit(&AuditEntry {
            tenant,
            actor_key_id: Some(auth.0.key_id.as_str()),
            action,
            target,
            before: json(before.and_then(|b| serde_json::to_value(b).ok())),
            after: json(after.and_then(|a| serde_json::to_value(a).ok())),
        })
        .await?;
    Ok(())
}

/// For [`record`]'s absent `before`/`after`.
pub const NONE: Option<&()> = None;

fn time_param(name: &str, value: Option<&str>) -> ApiResult<Option<i64>> {
    value
        .map(|v| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map(millis)
                .map_err(|_| Error::invalid(name, "must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z"))
        })
        .transpose()
}

/// Audit records, newest first: the caller's tenant's (tenant admin key) or
/// the platform's (platform admin key). Each has the acting key, the time,
/// the action, its target, the state before and after (secrets redacted)
/// and the JSON pointers that changed.
#[utoipa::path(get, path = "/v1/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, body = Page<AuditRecord>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_audit(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Page<AuditRecord>>> {
    let tenant = match auth.0.role {
        Role::PlatformAdmin => None,
        _ => Some(auth.admin()?),
    };
    let scope = match &tenant {
        Some(t) => AuditScope::Tenant(t),
        None => AuditScope::Platform,
    };
    let filter = AuditFilter {
        from_ms: time_param("from", q.from.as_deref())?,
        to_ms: time_param("to", q.to.as_deref())?,
        action: q.action,
        actor_key_id: q.actor,
        cursor: q.cursor,
        limit: q.limit,
    };
    Ok(Json(s.store.audit_page(scope, &filter).await?))
}
