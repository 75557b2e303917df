-- Plugin run history (postgres). Append-only migration; kept in lock-step with
-- the other backend's 0061_plugin_runs.sql.
--
-- The recent calls of each (tenant, plugin) for GET /v1/plugins/{id}/runs.
-- A bounded ring: store/plugin_runs.rs keeps the newest N per (tenant,
-- plugin) and deletes older rows in the same transaction as each batch it
-- writes. Rows are written by a background writer, never on the call path.
-- ids are UUIDv7 (time-ordered), so "newest" is "largest id".

CREATE TABLE plugin_runs (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    id           TEXT NOT NULL,
    plugin_id    TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    duration_us  BIGINT NOT NULL,
    fuel_used    BIGINT,
    outcome      TEXT NOT NULL,
    error_code   TEXT,
    error        TEXT,
    -- JSON array of the call's captured log lines
    logs         TEXT NOT NULL,
    logs_dropped BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX plugin_runs_recent ON plugin_runs(tenant_id, plugin_id, id);
