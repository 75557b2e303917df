//! Uploaded plugin components (`POST /v1/admin/plugins`): stored by sha256
//! in the database, so that every node on one PostgreSQL database can load
//! them and a restart keeps them, with the metadata the platform admin gave
//! (id, kind, version, contract, capabilities, allowed tenants).
//!
//! An artifact is platform data, not a tenant's: `allowed_tenants` says who
//! may run it, and the tenant-facing reads take the tenant and filter by it.
//! An (id, version) names one artifact for good: rows are never updated, so
//! nodes may cache what they loaded from one.

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Store, StoreError, StoreResult, TenantId, from_millis, is_unique_violation, json_column, now_ms};

/// An artifact's metadata (without its bytes).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Artifact {
    /// sha256 of the component, lowercase hex.
    pub digest: String,
    pub plugin_id: String,
    pub version: String,
    /// `scoring-rule`, `cross-sell`, `reward-scheme`, `channel-connector`.
    pub kind: String,
    pub contract: String,
    pub capabilities: Vec<String>,
    /// Tenant ids that may stage or run it.
    pub allowed_tenants: Vec<String>,
    pub size_bytes: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub uploaded_at: time::OffsetDateTime,
}

impl Artifact {
    pub fn allows(&self, tenant: &TenantId) -> bool {
        self.allowed_tenants.iter().any(|t| t == tenant.as_str())
    }
}

/// What an upload stores.
#[derive(Debug, Clone)]
pub struct NewArtifact<'a> {
    pub digest: &'a str,
    pub plugin_id: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub contract: &'a str,
    pub capabilities: &'a [String],
    pub allowed_tenants: &'a [String],
    pub wasm: &'a [u8],
}

const COLUMNS: &str =
    "digest, plugin_id, version, kind, contract, capabilities, allowed_tenants, size_bytes, uploaded_at";

fn string_list(text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_value(json_column(text)?).map_err(|e| StoreError::Corrupt(format!("artifact list column: {e}")))
}

fn artifact_from_row(row: &sqlx::any::AnyRow) -> StoreResult<Artifact> {
    Ok(Artifact {
        digest: row.try_get("digest")?,
        plugin_id: row.try_get("plugin_id")?,
        version: row.try_get("version")?,
        kind: row.try_get("kind")?,
        contract: row.try_get("contract")?,
        capabilities: string_list(&row.try_get::<String, _>("capabilities")?)?,
        allowed_tenants: string_list(&row.try_get::<String, _>("allowed_tenants")?)?,
        size_bytes: row.try_get("size_bytes")?,
        uploaded_at: from_millis(row.try_get("uploaded_at")?),
    })
}

impl Store {
    /// Stores an upload. The same bytes under the same (id, version) again
    /// is a no-op answering the stored artifact (an upload retried); another
    /// component under a taken (id, version), or these bytes under another
    /// name, is a 409: a version names one component for good.
    pub async fn insert_artifact(&self, new: NewArtifact<'_>) -> StoreResult<Artifact> {
        let inserted = sqlx::query(&format!(
            "INSERT INTO plugin_artifacts ({COLUMNS}, wasm) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(new.digest)
        .bind(new.plugin_id)
        .bind(new.version)
        .bind(new.kind)
        .bind(new.contract)
        .bind(serde_json::json!(new.capabilities).to_string())
        .bind(serde_json::json!(new.allowed_tenants).to_string())
        .bind(i64::try_from(new.wasm.len()).unwrap_or(i64::MAX))
        .bind(now_ms())
        .bind(new.wasm)
        .execute(self.db().pool())
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return match self.artifact(new.digest).await? {
                    Some(same) if same.plugin_id == new.plugin_id && same.version == new.version => Ok(same),
                    Some(other) => Err(StoreError::conflict(
                        "artifact_exists",
                        format!(
                            "this component is already uploaded as `{}` version {}",
                            other.plugin_id, other.version
                        ),
                    )),
                    None => Err(StoreError::conflict(
                        "version_exists",
                        format!(
                            "`{}` version {} is already uploaded with other bytes; give the new component a new version",
                            new.plugin_id, new.version
                        ),
                    )),
                };
            }
            Err(e) => return Err(e.into()),
        }
        self.artifact(new.digest)
            .await?
            .ok_or_else(|| StoreError::Corrupt("artifact vanished after insert".into()))
    }

    /// One artifact's metadata by digest (platform view, any tenant).
    pub async fn artifact(&self, digest: &str) -> StoreResult<Option<Artifact>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM plugin_artifacts WHERE digest = $1"))
            .bind(digest)
            .fetch_optional(self.db().pool())
            .await?;
        row.as_ref().map(artifact_from_row).transpose()
    }

    /// Every artifact, newest first (platform view).
    pub async fn artifacts(&self) -> StoreResult<Vec<Artifact>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM plugin_artifacts ORDER BY uploaded_at DESC, digest"
        ))
        .fetch_all(self.db().pool())
        .await?;
        rows.iter().map(artifact_from_row).collect()
    }

    /// The uploaded versions of `plugin` that `tenant` may run, oldest first.
    pub async fn tenant_artifacts(&self, tenant: &TenantId, plugin: &str) -> StoreResult<Vec<Artifact>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM plugin_artifacts WHERE plugin_id = $1 ORDER BY uploaded_at, version"
        ))
        .bind(plugin)
        .fetch_all(self.db().pool())
        .await?;
        let all: Vec<Artifact> = rows.iter().map(artifact_from_row).collect::<StoreResult<_>>()?;
        Ok(all.into_iter().filter(|a| a.allows(tenant)).collect())
    }

    /// The uploaded `version` of `plugin` with its bytes, if `tenant` may run it.
    pub async fn tenant_artifact_bytes(
        &self,
        tenant: &TenantId,
        plugin: &str,
        version: &str,
    ) -> StoreResult<Option<(Artifact, Vec<u8>)>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, wasm FROM plugin_artifacts WHERE plugin_id = $1 AND version = $2"
        ))
        .bind(plugin)
        .bind(version)
        .fetch_optional(self.db().pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let artifact = artifact_from_row(&row)?;
        if !artifact.allows(tenant) {
            return Ok(None);
        }
        Ok(Some((artifact, row.try_get("wasm")?)))
    }
}
