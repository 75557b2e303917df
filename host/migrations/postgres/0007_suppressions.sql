-- Message suppressions (PostgreSQL). Append-only; kept in lock-step with
-- ../sqlite/0007_suppressions.sql.
--
-- A customer who unsubscribed from a channel (reported by a connector's
-- inbound `message_unsubscribed` event, or recorded by an admin) gets no
-- more messages on it until the suppression is lifted: the outbox refuses to
-- queue them.
CREATE TABLE message_suppressions (
    tenant_id   TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    channel     TEXT NOT NULL,
    -- 'inbound:<connector>' or 'api'
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, channel),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers(tenant_id, id)
);
