-- The CRM playbook's host flows (PostgreSQL): satisfaction answers, complaint
-- cases, referrals, the tenant's playbook settings, and two more trigger
-- events with an optional audience. Append-only; kept in lock-step with
-- ../sqlite/0040_playbook.sql.

-- Per-tenant settings of the flows below; a tenant without a row has the
-- defaults (48 h to answer a complaint, no goodwill, no referral points).
CREATE TABLE playbook_settings (
    tenant_id                TEXT NOT NULL PRIMARY KEY REFERENCES tenants(id),
    complaint_response_hours BIGINT NOT NULL CHECK (complaint_response_hours BETWEEN 1 AND 8760),
    goodwill_points          BIGINT NOT NULL CHECK (goodwill_points >= 0),
    referral_points          BIGINT NOT NULL CHECK (referral_points >= 0),
    updated_at               BIGINT NOT NULL
);

-- One row per `satisfaction` interaction (same id): the validated answer,
-- so that NPS over time is an indexed aggregate, not a payload scan. Free
-- text stays in the interaction's payload (GDPR erasure clears it there).
CREATE TABLE satisfaction_answers (
    tenant_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    survey      TEXT NOT NULL CHECK (survey IN ('csat', 'nps')),
    score       BIGINT NOT NULL CHECK ((survey = 'csat' AND score BETWEEN 1 AND 5)
                                    OR (survey = 'nps' AND score BETWEEN 0 AND 10)),
    occurred_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, id) REFERENCES interactions(tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers(tenant_id, id)
);
CREATE INDEX satisfaction_answers_survey ON satisfaction_answers(tenant_id, survey, occurred_at);
CREATE INDEX satisfaction_answers_customer ON satisfaction_answers(tenant_id, customer_id, occurred_at);

-- A complaint case, opened by a `complaint` interaction (one case per
-- interaction). `due_at` = when it was made + the tenant's response time;
-- an `open` case past it is escalated once (`escalated_at`). Goodwill
-- points are credited at most once per case (`goodwill_entry_id`).
CREATE TABLE complaints (
    tenant_id         TEXT NOT NULL,
    id                TEXT NOT NULL,
    customer_id       TEXT NOT NULL,
    interaction_id    TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('open', 'answered', 'resolved')),
    opened_at         BIGINT NOT NULL,
    due_at            BIGINT NOT NULL,
    answered_at       BIGINT,
    resolved_at       BIGINT,
    escalated_at      BIGINT,
    goodwill_points   BIGINT,
    goodwill_entry_id TEXT,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, interaction_id),
    FOREIGN KEY (tenant_id, interaction_id) REFERENCES interactions(tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers(tenant_id, id)
);
CREATE INDEX complaints_due ON complaints(tenant_id, status, due_at);
CREATE INDEX complaints_customer ON complaints(tenant_id, customer_id, opened_at);
CREATE INDEX complaints_overdue ON complaints(due_at) WHERE status = 'open' AND escalated_at IS NULL;

-- Who referred whom: a customer is referred at most once (the primary
-- key), so the referral graph is a forest and a cycle check walks one
-- chain. `credited_at` is set by the referred customer's first purchase,
-- exactly once (a conditional UPDATE), with the referrer's points entry.
CREATE TABLE referrals (
    tenant_id             TEXT NOT NULL,
    referred_id           TEXT NOT NULL,
    referrer_id           TEXT NOT NULL,
    interaction_id        TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    credited_at           BIGINT,
    credit_interaction_id TEXT,
    credited_points       BIGINT,
    credit_entry_id       TEXT,
    PRIMARY KEY (tenant_id, referred_id),
    CHECK (referred_id <> referrer_id),
    FOREIGN KEY (tenant_id, interaction_id) REFERENCES interactions(tenant_id, id),
    FOREIGN KEY (tenant_id, referred_id) REFERENCES customers(tenant_id, id),
    FOREIGN KEY (tenant_id, referrer_id) REFERENCES customers(tenant_id, id)
);
CREATE INDEX referrals_referrer ON referrals(tenant_id, referrer_id, created_at);

-- Triggers gain the complaint events and an optional audience (JSON
-- `{"plugin", "segments"}`: fire only for customers whose stored segment
-- of that scoring plugin is one of these, e.g. a relationship level).
ALTER TABLE message_triggers DROP CONSTRAINT message_triggers_event_check;
ALTER TABLE message_triggers ADD CONSTRAINT message_triggers_event_check
    CHECK (event IN ('tier_changed', 'score_crossed', 'reward_redeemable', 'complaint_opened', 'complaint_escalated'));
ALTER TABLE message_triggers ADD COLUMN audience TEXT;
