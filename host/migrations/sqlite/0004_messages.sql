-- The durable outbox of outbound messages, its delivery log and message
-- templates (SQLite). Append-only; kept in lock-step with
-- ../postgres/0004_messages.sql.
--
-- A message is stored (status `pending`) in the transaction that accepts it,
-- before anything is acknowledged; delivery workers on any node claim due
-- rows with a lease (`lease_owner`, `lease_expires_at`) and record each
-- attempt's outcome only while they still hold that lease (fenced on
-- `lease_owner` + `attempts`), so a node that died or stalled mid-delivery
-- never overwrites the result of the node that took over.

CREATE TABLE messages (
    tenant_id        TEXT NOT NULL,
    id               TEXT NOT NULL,
    customer_id      TEXT NOT NULL,
    channel          TEXT NOT NULL,
    -- the connector plugin that delivered it (chosen at delivery time, so a
    -- connector enabled after the message was queued can still deliver it)
    connector        TEXT,
    -- rendered at enqueue time: the outbox holds exactly what is sent
    to_address       TEXT NOT NULL DEFAULT '',
    subject          TEXT,
    body             TEXT NOT NULL,
    -- JSON object
    metadata         TEXT NOT NULL DEFAULT '{}',
    template         TEXT,
    idempotency_key  TEXT NOT NULL,
    -- sha256 of the canonical request, to tell a retry from a different
    -- request reusing the key
    request_hash     TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivering', 'delivered', 'dead')),
    -- attempts ever made; numbers the delivery log and fences results
    attempts         BIGINT NOT NULL DEFAULT 0,
    -- the retry window (max_attempts, max_age_s) starts here; a replay of a
    -- dead message opens a new one without renumbering its attempts
    window_started_at    BIGINT NOT NULL,
    window_base_attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    last_error       TEXT,
    provider_id      TEXT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers(tenant_id, id)
);
-- Claiming scans due rows of every tenant (workers serve all tenants).
CREATE INDEX messages_due ON messages(status, next_attempt_at);
CREATE INDEX messages_list ON messages(tenant_id, status, id);
CREATE INDEX messages_customer ON messages(tenant_id, customer_id, id);

-- The delivery log: one row per attempt, append-only.
CREATE TABLE message_attempts (
    tenant_id   TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    -- the node (process) that made the attempt
    node        TEXT NOT NULL,
    connector   TEXT,
    started_at  BIGINT NOT NULL,
    latency_ms  BIGINT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('delivered', 'retryable', 'failed', 'lease_lost')),
    error       TEXT,
    PRIMARY KEY (tenant_id, message_id, attempt, node),
    FOREIGN KEY (tenant_id, message_id) REFERENCES messages(tenant_id, id)
);

-- Named templates (minijinja syntax) rendered when a message is enqueued.
CREATE TABLE message_templates (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    -- NULL = usable on any channel
    channel     TEXT,
    subject     TEXT,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
