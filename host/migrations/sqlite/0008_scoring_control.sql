-- Scores users can trust (SQLite). Append-only; kept in lock-step with
-- ../postgres/0008_scoring_control.sql.
--
-- as_of: a batch job may score as of a past date (`rapport score --as-of`,
-- `"as_of"` of `POST /v1/scoring/jobs`): its plugins see that date as "now"
-- and no interaction after it. The date is stored with the job and with
-- every score it computed, so a score says which day it describes. NULL =
-- scored as of the time it was computed.
ALTER TABLE customer_scores ADD COLUMN as_of BIGINT;
ALTER TABLE customer_score_history ADD COLUMN as_of BIGINT;

-- Scoring jobs: a job whose plugin failed (to fit, or stopped mid-run) is
-- `partially_failed` when other plugins' scores were stored, not
-- `succeeded`; `plugin_outcomes` (JSON array) says how each plugin fared.
-- SQLite cannot alter a CHECK constraint, so the table is rebuilt (nothing
-- references it).
CREATE TABLE scoring_jobs_0008 (
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    id               TEXT NOT NULL,
    plugin_id        TEXT,
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'running', 'succeeded', 'partially_failed', 'failed')),
    total            BIGINT NOT NULL DEFAULT 0,
    done             BIGINT NOT NULL DEFAULT 0,
    failed_customers BIGINT NOT NULL DEFAULT 0,
    fit_summary      TEXT,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    updated_at       BIGINT NOT NULL,
    as_of            BIGINT,
    plugin_outcomes  TEXT,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO scoring_jobs_0008 (tenant_id, id, plugin_id, status, total, done, failed_customers, fit_summary,
                               error, created_at, started_at, finished_at, updated_at)
SELECT tenant_id, id, plugin_id, status, total, done, failed_customers, fit_summary,
       error, created_at, started_at, finished_at, updated_at
FROM scoring_jobs;
DROP TABLE scoring_jobs;
ALTER TABLE scoring_jobs_0008 RENAME TO scoring_jobs;
CREATE INDEX scoring_jobs_status ON scoring_jobs(tenant_id, status);

-- Tenants whose background rescore worker is paused (a row = paused). The
-- worker of every node leaves their queue alone until resumed, so scores a
-- job computed as of a date stay as they are while the operator checks
-- them; the queue keeps filling and is drained on resume.
CREATE TABLE rescore_pauses (
    tenant_id  TEXT NOT NULL PRIMARY KEY REFERENCES tenants(id),
    paused_at  BIGINT NOT NULL
);

-- Each plugin's last fit per tenant (scoring or cross-sell): what it
-- returned (its summary JSON) or why it failed, so a fitted model can be
-- inspected through the API (`GET /v1/plugins/{id}/fit`) beside the kv rows
-- the plugin kept. Replaced by every fit.
CREATE TABLE plugin_fits (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    plugin_id     TEXT NOT NULL,
    fitted_at     BIGINT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')),
    -- JSON the plugin's fit returned; NULL when it failed
    summary       TEXT,
    error_code    TEXT,
    error_message TEXT,
    -- the scoring job that ran the fit; NULL for a cross-sell fit
    job_id        TEXT,
    -- as-of date the fit's population was cut at; NULL = none
    as_of         BIGINT,
    duration_ms   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id)
);
