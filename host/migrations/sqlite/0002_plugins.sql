-- Per-tenant plugin state (SQLite). Append-only; kept in lock-step with
-- ../postgres/0002_plugins.sql.
--
-- The manifest (a file, not a table) says which plugins exist and each
-- tenant's defaults; these tables hold what changes at run time: admin
-- overrides, failure counting and suspension, the plugins' key-value data.
-- plugin_id is not a foreign key: plugins live in the manifest, and a row
-- for a plugin the manifest no longer lists is simply ignored.

CREATE TABLE plugin_tenant_state (
    tenant_id            TEXT NOT NULL REFERENCES tenants(id),
    plugin_id            TEXT NOT NULL,
    -- NULL = follow the manifest's [[tenant.plugin]] enabled
    enabled              BOOLEAN,
    -- JSON object replacing the manifest's config; NULL = follow the manifest
    config               TEXT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    suspended_at         BIGINT,
    last_error           TEXT,
    last_failure_at      BIGINT,
    updated_at           BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id)
);

CREATE TABLE plugin_kv (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    plugin_id   TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BLOB NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id, key)
);

-- Recent failures per (tenant, plugin), pruned to the latest few on insert.
CREATE TABLE plugin_failures (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    cause       TEXT NOT NULL,
    message     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX plugin_failures_recent ON plugin_failures(tenant_id, plugin_id, id);
