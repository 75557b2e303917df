//! Tenants and API keys.
//!
//! A key is a random 256-bit token shown once at creation (`rpk_...`); only
//! its SHA-256 is stored. SHA-256 rather than a password hash is deliberate:
//! the token is uniformly random, so there is nothing to brute-force, and the
//! lookup on every request stays a single indexed equality.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use utoipa::ToSchema;

use super::{Store, StoreError, StoreResult, TenantId, from_millis, new_id, now_ms};

/// What a key may do. Ordered from most to least privileged within a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
// The CLI spells roles as the API does (`tenant_admin`); the kebab-case
// spellings it used to print stay accepted.
#[value(rename_all = "snake_case")]
pub enum Role {
    /// Manages tenants and keys across the platform; sees no tenant's data.
    #[value(alias = "platform-admin")]
    PlatformAdmin,
    /// Everything within one tenant, including keys, plugins and erasure.
    #[value(alias = "tenant-admin")]
    TenantAdmin,
    /// Reads and writes customers, interactions, products and loyalty.
    #[value(alias = "tenant-write")]
    TenantWrite,
    /// Reads only.
    #[value(alias = "tenant-read")]
    TenantRead,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::TenantAdmin => "tenant_admin",
            Role::TenantWrite => "tenant_write",
            Role::TenantRead => "tenant_read",
        }
    }

    fn parse(s: &str) -> StoreResult<Role> {
        Ok(match s {
            "platform_admin" => Role::PlatformAdmin,
            "tenant_admin" => Role::TenantAdmin,
            "tenant_write" => Role::TenantWrite,
            "tenant_read" => Role::TenantRead,
            other => return Err(StoreError::Corrupt(format!("unknown role {other:?}"))),
        })
    }

    /// Tenant-scoped privilege level: admin 3, write 2, read 1.
    pub fn tenant_level(self) -> u8 {
        match self {
            Role::PlatformAdmin => 0,
            Role::TenantAdmin => 3,
            Role::TenantWrite => 2,
            Role::TenantRead => 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}

/// An API key as listed (never with its token).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: Option<String>,
    pub role: Role,
    pub name: String,
    /// First characters of the token, to recognise it in a list.
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<time::OffsetDateTime>,
}

/// A freshly created key: the only time the token is ever returned.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: ApiKey,
    pub token: String,
}

/// The identity behind a valid, unrevoked token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub tenant: Option<TenantId>,
    pub role: Role,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn generate_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("rpk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Tenant ids chosen by admins: 1-64 of `a-z 0-9 - _`, starting with a letter
/// or digit, so they are safe in URLs, file names and manifests.
pub fn validate_tenant_id(id: &str) -> StoreResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "id",
            "tenant ids are 1-64 characters of a-z, 0-9, '-' and '_'",
        ))
    }
}

fn tenant_from_row(row: &sqlx::any::AnyRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

fn key_from_row(row: &sqlx::any::AnyRow) -> StoreResult<ApiKey> {
    let role: String = row.try_get("role")?;
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        role: Role::parse(&role)?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        created_at: from_millis(row.try_get("created_at")?),
        revoked_at: revoked.map(from_millis),
    })
}

impl Store {
    /// Creates a tenant. `id` may be chosen by the admin (a slug such as
    /// `acme`, so that a plugin manifest can name the tenant before it
    /// exists); otherwise a UUIDv7 is generated.
    pub async fn create_tenant(&self, name: &str, id: Option<&str>) -> StoreResult<Tenant> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(StoreError::invalid("name", "must be 1 to 200 characters"));
        }
        let id = match id {
            Some(id) => {
                validate_tenant_id(id)?;
                id.to_string()
            }
            None => new_id(),
        };
        let now = now_ms();
        let inserted = sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(now)
            .execute(self.db().pool())
            .await;
        match inserted {
            Err(e) if super::is_unique_violation(&e) => {
                return Err(StoreError::conflict(
                    "tenant_exists",
                    format!("a tenant with id {id:?} already exists"),
                ));
            }
            other => other?,
        };
        Ok(Tenant {
            id,
            name: name.to_string(),
            created_at: super::from_millis(now),
        })
    }

    pub async fn get_tenant(&self, id: &str) -> StoreResult<Tenant> {
        let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db().pool())
            .await?
            .ok_or(StoreError::NotFound { entity: "tenant" })?;
        tenant_from_row(&row)
    }

    /// The tenant with this id, if it exists, as the scope of store calls.
    /// For the two request paths that name a tenant instead of taking it
    /// from the caller's key: the platform admin's `/v1/tenants/{id}/...`
    /// (a `platform_admin` key, checked by the caller) and the `?tenant=` of
    /// an inbound channel request (trusted only once the tenant's connector
    /// has verified the provider's signature with that tenant's secret).
    pub async fn existing_tenant(&self, id: &str) -> StoreResult<TenantId> {
        Ok(TenantId::from_row(self.get_tenant(id).await?.id))
    }

    pub async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM tenants ORDER BY id")
            .fetch_all(self.db().pool())
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Creates a key. `tenant` must be `None` exactly for platform admins.
    pub async fn create_key(&self, tenant: Option<&TenantId>, role: Role, name: &str) -> StoreResult<CreatedKey> {
        if (role == Role::PlatformAdmin) != tenant.is_none() {
            return Err(StoreError::invalid(
                "role",
                "platform_admin keys belong to no tenant; every other role needs a tenant",
            ));
        }
        if let Some(t) = tenant {
            self.get_tenant(t.as_str()).await?;
        }
        let token = generate_token();
        let key = ApiKey {
            id: new_id(),
            tenant_id: tenant.map(|t| t.0.clone()),
            role,
            name: name.trim().to_string(),
            prefix: token[..12].to_string(),
            created_at: from_millis(now_ms()),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, role, name, token_hash, prefix, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(role.as_str())
        .bind(&key.name)
        .bind(hash_token(&token))
        .bind(&key.prefix)
        .bind(super::millis(key.created_at))
        .execute(self.db().pool())
        .await?;
        Ok(CreatedKey { key, token })
    }

    /// Keys of one tenant, or the platform keys when `tenant` is `None`.
    pub async fn list_keys(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<ApiKey>> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(
                    "SELECT id, tenant_id, role, name, prefix, created_at, revoked_at FROM api_keys \
                 WHERE tenant_id = $1 ORDER BY id",
                )
                .bind(t.as_str())
                .fetch_all(self.db().pool())
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id, tenant_id, role, name, prefix, created_at, revoked_at FROM api_keys \
                 WHERE tenant_id IS NULL ORDER BY id",
                )
                .fetch_all(self.db().pool())
                .await?
            }
        };
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key of `tenant` (or a platform key when `None`). Idempotent.
    pub async fn revoke_key(&self, tenant: Option<&TenantId>, key_id: &str) -> StoreResult<ApiKey> {
        let now = now_ms();
        let affected = match tenant {
            Some(t) => {
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND tenant_id = $3",
                )
                .bind(now)
                .bind(key_id)
                .bind(t.as_str())
                .execute(self.db().pool())
                .await?
            }
            None => {
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND tenant_id IS NULL",
                )
                .bind(now)
                .bind(key_id)
                .execute(self.db().pool())
                .await?
            }
        };
        if affected.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity: "api key" });
        }
        let row =
            sqlx::query("SELECT id, tenant_id, role, name, prefix, created_at, revoked_at FROM api_keys WHERE id = $1")
                .bind(key_id)
                .fetch_one(self.db().pool())
                .await?;
        key_from_row(&row)
    }

    /// Resolves a bearer token to its principal; `None` for unknown or revoked.
    pub async fn authenticate(&self, token: &str) -> StoreResult<Option<Principal>> {
        let row = sqlx::query("SELECT id, tenant_id, role FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(hash_token(token))
            .fetch_optional(self.db().pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let tenant: Option<String> = row.try_get("tenant_id")?;
        let role: String = row.try_get("role")?;
        Ok(Some(Principal {
            key_id: row.try_get("id")?,
            tenant: tenant.map(TenantId::from_row),
            role: Role::parse(&role)?,
        }))
    }
}
