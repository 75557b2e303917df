-- Campaigns to segments and the program's metrics (SQLite). Append-only;
-- kept in lock-step with ../postgres/0050_campaigns.sql.
--
-- A campaign sends one template to every customer of an audience (a scoring
-- plugin's stored segment or score range) through the outbox. It runs in
-- batches ordered by customer id; `resume_after` is the last customer handled and
-- is advanced in the same transaction as the batch's messages and recipient
-- rows, so a campaign resumed after a crash continues where it stopped and a
-- retried request (same idempotency key) never sends twice.

CREATE TABLE campaigns (
    tenant_id              TEXT NOT NULL REFERENCES tenants(id),
    id                     TEXT NOT NULL,
    name                   TEXT NOT NULL,
    idempotency_key        TEXT NOT NULL,
    -- sha256 of the canonical request: a retry from a different request
    request_hash           TEXT NOT NULL,
    channel                TEXT NOT NULL,
    template               TEXT NOT NULL,
    -- JSON objects: the template's `data`, the audience's filter
    data                   TEXT NOT NULL DEFAULT '{}',
    audience               TEXT NOT NULL,
    -- share of the audience held out (not messaged) as the control group
    control_share          REAL NOT NULL CHECK (control_share >= 0 AND control_share < 1),
    conversion_window_days BIGINT NOT NULL CHECK (conversion_window_days > 0),
    status                 TEXT NOT NULL CHECK (status IN ('sending', 'sent')),
    resume_after           TEXT,
    started_at             BIGINT NOT NULL,
    finished_at            BIGINT,
    updated_at             BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key)
);

-- Every customer of the audience and what became of them: `arm` says
-- whether they were messaged (`treatment`) or held out (`control`, by a hash
-- of campaign and customer, so stable across retries); `outcome` is
-- `queued` (message_id set), `held_out`, `suppressed` (unsubscribed from
-- the channel) or `skipped` (erased, no address, a template error: reason).
CREATE TABLE campaign_recipients (
    tenant_id   TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    arm         TEXT NOT NULL CHECK (arm IN ('treatment', 'control')),
    outcome     TEXT NOT NULL CHECK (outcome IN ('queued', 'held_out', 'suppressed', 'skipped')),
    message_id  TEXT,
    reason      TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, customer_id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns(tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers(tenant_id, id)
);

-- The program's metrics: loyalty liability sums the tenant's balances from
-- this covering index (no table read).
CREATE INDEX loyalty_accounts_balance ON loyalty_accounts(tenant_id, balance);
