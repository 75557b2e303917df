-- Message triggers (SQLite). Append-only; kept in lock-step with
-- ../postgres/0005_triggers.sql.
--
-- A trigger turns an event the host already records (a tier change, a score
-- crossing a threshold, a reward becoming affordable) into an outbox message
-- from one of the tenant's templates, in the same transaction as the event.
-- The template is a composite foreign key, so a template in use cannot be
-- deleted and a trigger can never name another tenant's template.
CREATE TABLE message_triggers (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    event       TEXT NOT NULL CHECK (event IN ('tier_changed', 'score_crossed', 'reward_redeemable')),
    -- JSON object: the event's conditions (see store/triggers.rs)
    conditions  TEXT NOT NULL DEFAULT '{}',
    channel     TEXT NOT NULL,
    template    TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name),
    FOREIGN KEY (tenant_id, template) REFERENCES message_templates(tenant_id, name)
);
CREATE INDEX message_triggers_event ON message_triggers(tenant_id, event, enabled);
