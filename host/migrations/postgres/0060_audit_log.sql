-- The audit log (PostgreSQL). Append-only; kept in lock-step with
-- ../sqlite/0060_audit_log.sql.
--
-- One row per admin action (store/audit.rs). tenant_id is NULL for platform
-- actions (tenants, platform keys, manifest reloads). before/after are JSON
-- documents with secrets already redacted; the trigger makes the table
-- append-only in the database itself, so no code path (API or otherwise)
-- can rewrite history.

CREATE TABLE audit_log (
    id            TEXT NOT NULL PRIMARY KEY,
    tenant_id     TEXT REFERENCES tenants(id),
    actor_key_id  TEXT,
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,
    before        TEXT,
    after         TEXT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
