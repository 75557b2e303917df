//! Installing plugin versions through the API (platform admin):
//! `POST /v1/admin/plugins` takes a component's bytes with its metadata,
//! stores it by sha256 in the database (so every node sharing it can load
//! it and restarts keep it), and `GET /v1/admin/plugins` lists the uploads.
//!
//! An upload is checked before it is stored: its imports against the
//! capabilities declared with it (refused naming the import), its exports
//! against the contract, compiled once. It adds a *version* of a plugin id
//! the manifest declares: the manifest stays the declarative source of
//! which plugins exist, their limits and which tenants have them (see
//! README "Plugin versions"). The upload is an audited admin action.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Auth, Json, Query, RawBody};
use super::{ApiResult, AppState, Error};
use crate::plugins::versions::{compile, parse_capabilities, upload_definition};
use crate::store::StoreError;
use crate::store::artifacts::{Artifact, NewArtifact};

/// Largest accepted component (a Python component is tens of MB).
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;
/// Longest version string.
const MAX_VERSION_CHARS: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_plugin, list_uploads))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_COMPONENT_BYTES))
}

/// The metadata of an upload (query parameters; the body is the component).
/// `id`, `kind`, `version` and `tenants` are required; they are checked
/// after the key (422 naming the missing one), so that a key that may not
/// upload is told so first.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// A plugin id the manifest declares (required).
    #[serde(default)]
    pub id: String,
    /// Must be the manifest entry's kind (`scoring-rule`, `cross-sell`, ...; required).
    #[serde(default)]
    pub kind: String,
    /// A new version of the plugin (letters, digits, `.`, `-`, `+`; not the manifest's; required).
    #[serde(default)]
    pub version: String,
    /// The WIT package the component targets.
    #[serde(default = "default_contract")]
    pub contract: String,
    /// Comma-separated capabilities it may import (e.g. `customers,kv`); empty: none.
    #[serde(default)]
    pub capabilities: String,
    /// Comma-separated ids of the tenants that may stage or run it (required).
    #[serde(default)]
    pub tenants: String,
}

fn default_contract() -> String {
    "rapport:crm@0.1.0".to_owned()
}

fn list(text: &str) -> Vec<String> {
    let mut items: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    items.sort();
    items.dedup();
    items
}

fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.chars().count() <= MAX_VERSION_CHARS
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
}

/// Upload a component as a new version of a plugin the manifest declares (platform admin).
///
/// The body is the component's bytes; the metadata is in the query. Refused
/// with 422 `component_rejected` when it imports anything its capabilities
/// do not grant (the import is named), does not match the contract, or does
/// not compile; 409 when the (id, version) is the manifest's or already
/// names another component. Uploading the same bytes again answers 201
/// with the stored artifact.
#[utoipa::path(post, path = "/v1/admin/plugins", tag = "admin", params(UploadQuery),
    request_body(content = Vec<u8>, description = "The WebAssembly component (any content type; `application/wasm` or `application/octet-stream`)",
        content_type = "application/octet-stream"),
    responses((status = 201, body = Artifact), (status = 409, body = super::error::ErrorBody)))]
async fn upload_plugin(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<UploadQuery>,
    RawBody(body): RawBody,
) -> ApiResult<(StatusCode, Json<Artifact>)> {
    auth.platform()?;
    for (field, value) in [
        ("id", &q.id),
        ("kind", &q.kind),
        ("version", &q.version),
        ("tenants", &q.tenants),
    ] {
        if value.trim().is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
    }
    let manifest = s.manifest.current();
    let spec = manifest.plugin(&q.id).ok_or_else(|| Error::UnprocessableCode {
        code: "unknown_plugin",
        field: "id".into(),
        message: format!("the manifest declares no plugin `{}`; add its entry first", q.id),
    })?;
    if !valid_version(&q.version) {
        return Err(Error::invalid(
            "version",
            format!("1 to {MAX_VERSION_CHARS} letters, digits, `.`, `-` or `+`"),
        ));
    }
    if q.version == spec.version {
        return Err(Error::Conflict {
            code: "version_in_manifest",
            message: format!("version {} of `{}` is the manifest's", q.version, q.id),
            details: serde_json::json!({}),
        });
    }
    let capabilities = list(&q.capabilities);
    parse_capabilities(&capabilities).map_err(|m| Error::invalid("capabilities", m))?;
    let tenants = list(&q.tenants);
    if tenants.is_empty() {
        return Err(Error::invalid("tenants", "name at least one tenant"));
    }
    for tenant in &tenants {
        match s.store.existing_tenant(tenant).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                return Err(Error::invalid("tenants", format!("no tenant `{tenant}`")));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if body.is_empty() {
        return Err(Error::invalid("body", "the component's bytes are missing"));
    }
    let digest = hex::encode(Sha256::digest(&body));
    let new = NewArtifact {
        digest: &digest,
        plugin_id: &q.id,
        version: &q.version,
        kind: &q.kind,
        contract: &q.contract,
        capabilities: &capabilities,
        allowed_tenants: &tenants,
        wasm: &body,
    };
    // The metadata as the artifact will be stored, checked by the same
    // code that loads it for a call.
    let probe = Artifact {
        digest: digest.clone(),
        plugin_id: q.id.clone(),
        version: q.version.clone(),
        kind: q.kind.clone(),
        contract: q.contract.clone(),
        capabilities: capabilities.clone(),
        allowed_tenants: tenants.clone(),
        size_bytes: 0,
        uploaded_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    let rejected = |message: String| Error::UnprocessableCode {
        code: "component_rejected",
        field: "body".into(),
        message,
    };
    let definition = upload_definition(spec, &probe, body.to_vec()).map_err(rejected)?;
    let runtime = s
        .plugins
        .runtime()
        .map_err(|f| Error::Internal(anyhow::anyhow!("plugin runtime: {}", f.message)))?;
    compile(runtime, definition).await.map_err(rejected)?;
    let artifact = s.store.insert_artifact(new).await?;
    // A platform action: the component's identity and who may use it.
    super::audit::record(
        &s,
        &auth,
        None,
        "plugin.upload",
        format!("plugin:{}@{}", artifact.plugin_id, artifact.version),
        super::audit::NONE,
        Some(&artifact),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(artifact)))
}

/// Every uploaded plugin version, newest first (platform admin).
#[utoipa::path(get, path = "/v1/admin/plugins", tag = "admin", responses((status = 200, body = Vec<Artifact>)))]
async fn list_uploads(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<Vec<Artifact>>> {
    auth.platform()?;
    Ok(Json(s.store.artifacts().await?))
}
