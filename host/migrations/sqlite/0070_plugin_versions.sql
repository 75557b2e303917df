-- Plugin versions, uploads and simulations (SQLite). Append-only; kept in
-- lock-step with ../postgres/0070_plugin_versions.sql.
--
-- plugin_artifacts: components a platform admin uploaded
-- (`POST /v1/admin/plugins`), stored by sha256 in the database so every node
-- on one PostgreSQL sees them and a restart keeps them. An (id, version)
-- names one artifact for good: a row is never updated.
CREATE TABLE plugin_artifacts (
    digest          TEXT PRIMARY KEY,
    plugin_id       TEXT NOT NULL,
    version         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    contract        TEXT NOT NULL,
    -- JSON arrays of capability names and of tenant ids allowed to use it
    capabilities    TEXT NOT NULL,
    allowed_tenants TEXT NOT NULL,
    size_bytes      BIGINT NOT NULL,
    wasm            BLOB NOT NULL,
    uploaded_at     BIGINT NOT NULL,
    UNIQUE (plugin_id, version)
);

-- Which version of a plugin a tenant runs: the active one (NULL = the
-- manifest's), the previous active one (what a rollback returns to) and a
-- staged candidate served to `staged_percent` % of the customers, chosen by
-- a hash of the customer id. Read on every call, so a change applies at once
-- on every node.
CREATE TABLE plugin_versions (
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    plugin_id        TEXT NOT NULL,
    active_version   TEXT,
    previous_version TEXT,
    staged_version   TEXT,
    staged_percent   BIGINT NOT NULL DEFAULT 0 CHECK (staged_percent BETWEEN 0 AND 100),
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id)
);

-- The plugin version that computed each stored score (NULL: stored before
-- versions were recorded).
ALTER TABLE customer_scores ADD COLUMN plugin_version TEXT;
ALTER TABLE customer_score_history ADD COLUMN plugin_version TEXT;

-- Simulations (`POST /v1/plugins/{id}/simulate`): the job and its report.
-- The only table a simulation writes.
CREATE TABLE plugin_simulations (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    version     TEXT NOT NULL,
    baseline    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    total       BIGINT NOT NULL DEFAULT 0,
    done        BIGINT NOT NULL DEFAULT 0,
    -- JSON: the request (sample, as_of) and the report once finished
    request     TEXT NOT NULL,
    report      TEXT,
    error       TEXT,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT,
    PRIMARY KEY (tenant_id, id)
);
