-- Why a plugin refused its tenant's config (sqlite). Append-only; kept in
-- lock-step with the other backend's 0062_plugin_config_error.sql.
--
-- Set when a call answers invalid-config (or a secret reference does not
-- resolve), cleared by a new config or a successful call; GET /v1/plugins
-- then shows the plugin `misconfigured` with this as its last_error.
ALTER TABLE plugin_tenant_state ADD COLUMN config_error TEXT;
