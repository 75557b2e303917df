-- Stored scores, rescoring queue and batch scoring jobs (PostgreSQL). Append-only;
-- kept in lock-step with ../sqlite/0003_scores.sql.
--
-- plugin_id is not a foreign key (plugins live in the manifest, see
-- 0002_plugins.sql). Scores reference the customer with the composite key, so
-- a score can never point at another tenant's customer.

-- The current score of each customer by each scoring plugin.
CREATE TABLE customer_scores (
    tenant_id   TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    label       TEXT,
    segment     TEXT,
    explanation TEXT NOT NULL,
    -- JSON object: component name -> number
    components  TEXT NOT NULL DEFAULT '{}',
    -- when the input the score was computed from was read (not when it was
    -- written): a slower writer with older input never overwrites a newer score
    computed_at BIGINT NOT NULL,
    -- the batch job that computed it; NULL = rescored after new interactions
    job_id      TEXT,
    PRIMARY KEY (tenant_id, customer_id, plugin_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers(tenant_id, id)
);
CREATE INDEX customer_scores_segment ON customer_scores(tenant_id, plugin_id, segment);
CREATE INDEX customer_scores_value ON customer_scores(tenant_id, plugin_id, value);

-- Every score ever computed, append-only. The primary key doubles as the
-- index of "a customer's history for a plugin, by time".
CREATE TABLE customer_score_history (
    tenant_id   TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    computed_at BIGINT NOT NULL,
    id          TEXT NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    label       TEXT,
    segment     TEXT,
    explanation TEXT NOT NULL,
    components  TEXT NOT NULL DEFAULT '{}',
    job_id      TEXT,
    PRIMARY KEY (tenant_id, customer_id, plugin_id, computed_at, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers(tenant_id, id)
);

-- Customers whose scores are stale (a new interaction arrived). The worker
-- deletes an entry only if `generation` is still the one it read, so an
-- interaction that lands while its customer is being rescored is not lost.
CREATE TABLE rescore_queue (
    tenant_id   TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    enqueued_at BIGINT NOT NULL,
    generation  BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, customer_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers(tenant_id, id)
);
CREATE INDEX rescore_queue_age ON rescore_queue(tenant_id, enqueued_at);

-- Batch scoring jobs: fit, then rescore every customer of the tenant.
CREATE TABLE scoring_jobs (
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    id               TEXT NOT NULL,
    -- NULL = every active scoring plugin of the tenant
    plugin_id        TEXT,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    total            BIGINT NOT NULL DEFAULT 0,
    done             BIGINT NOT NULL DEFAULT 0,
    failed_customers BIGINT NOT NULL DEFAULT 0,
    -- JSON object: plugin id -> that plugin's fit summary
    fit_summary      TEXT,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    -- heartbeat: a queued/running job not updated for a while was abandoned
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX scoring_jobs_status ON scoring_jobs(tenant_id, status);
