-- Rapport core schema (PostgreSQL). Append-only: never edit a released migration,
-- add a new file. Kept in lock-step with ../sqlite/0001_core.sql.
--
-- Conventions shared by both backends (the store goes through sqlx::Any):
--   * ids are UUIDv7 text; every tenant-owned table is keyed (tenant_id, id)
--     and foreign keys are composite, so a row can never point at another
--     tenant's row, whatever the application code does;
--   * times are BIGINT milliseconds since the Unix epoch (UTC);
--   * money is BIGINT minor units (cents) next to an ISO 4217 currency;
--   * JSON is TEXT.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants(id),
    role        TEXT NOT NULL CHECK (role IN ('platform_admin', 'tenant_admin', 'tenant_write', 'tenant_read')),
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    -- platform admins belong to no tenant; every other key to exactly one
    CHECK ((role = 'platform_admin') = (tenant_id IS NULL))
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

CREATE TABLE customers (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    external_id TEXT NOT NULL,
    name        TEXT,
    email       TEXT,
    phone       TEXT,
    attributes  TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    erased_at   BIGINT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX customers_email ON customers(tenant_id, email);
CREATE INDEX customers_created ON customers(tenant_id, created_at);

-- Tenant-defined interaction kinds; the built-in kinds need no row.
CREATE TABLE interaction_kinds (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE interactions (
    tenant_id       TEXT NOT NULL,
    id              TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    kind            TEXT NOT NULL,
    channel         TEXT,
    occurred_at     BIGINT NOT NULL,
    amount_minor    BIGINT,
    currency        TEXT,
    payload         TEXT NOT NULL DEFAULT '{}',
    idempotency_key TEXT,
    -- sha256 of the canonical request, so a replay with a different body is
    -- told apart from a genuine retry
    request_hash    TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers(tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    CHECK ((amount_minor IS NULL) = (currency IS NULL))
);
CREATE INDEX interactions_timeline ON interactions(tenant_id, customer_id, occurred_at, id);
CREATE INDEX interactions_kind ON interactions(tenant_id, kind, occurred_at);

CREATE TABLE interaction_items (
    tenant_id        TEXT NOT NULL,
    interaction_id   TEXT NOT NULL,
    line_no          BIGINT NOT NULL,
    sku              TEXT NOT NULL,
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (tenant_id, interaction_id, line_no),
    FOREIGN KEY (tenant_id, interaction_id) REFERENCES interactions(tenant_id, id)
);
CREATE INDEX interaction_items_sku ON interaction_items(tenant_id, sku);

CREATE TABLE products (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    sku         TEXT NOT NULL,
    name        TEXT NOT NULL,
    category    TEXT,
    price_minor BIGINT NOT NULL CHECK (price_minor >= 0),
    currency    TEXT NOT NULL,
    attributes  TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, sku)
);
CREATE INDEX products_category ON products(tenant_id, category);

CREATE TABLE loyalty_tiers (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    rank        BIGINT NOT NULL CHECK (rank >= 0),
    min_points  BIGINT NOT NULL DEFAULT 0,
    perks       TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, rank)
);

-- One account per customer. `balance` is a cache of SUM(ledger.points),
-- maintained in the same transaction as every ledger insert; the CHECK is the
-- last line of defence for "a balance never goes negative".
CREATE TABLE loyalty_accounts (
    tenant_id       TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    tier_id         TEXT,
    balance         BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    lifetime_earned BIGINT NOT NULL DEFAULT 0,
    last_seq        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers(tenant_id, id),
    FOREIGN KEY (tenant_id, tier_id) REFERENCES loyalty_tiers(tenant_id, id)
);

CREATE TABLE loyalty_rewards (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    cost_points   BIGINT NOT NULL CHECK (cost_points > 0),
    min_tier_rank BIGINT,
    stock         BIGINT CHECK (stock IS NULL OR stock >= 0),
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- Append-only. Credits (earn, positive adjust) are "lots"; debits (redeem,
-- expire, negative adjust) consume lots oldest first, recorded in
-- loyalty_allocations, so a lot's remaining points are derivable.
CREATE TABLE loyalty_ledger (
    tenant_id       TEXT NOT NULL,
    id              TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('earn', 'redeem', 'expire', 'adjust')),
    points          BIGINT NOT NULL CHECK (points <> 0),
    reason          TEXT NOT NULL,
    expires_at      BIGINT,
    idempotency_key TEXT,
    interaction_id  TEXT,
    reward_id       TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, customer_id, seq),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES loyalty_accounts(tenant_id, customer_id),
    FOREIGN KEY (tenant_id, interaction_id) REFERENCES interactions(tenant_id, id),
    FOREIGN KEY (tenant_id, reward_id) REFERENCES loyalty_rewards(tenant_id, id),
    CHECK (kind = 'adjust' OR (kind = 'earn') = (points > 0))
);

CREATE TABLE loyalty_allocations (
    tenant_id  TEXT NOT NULL,
    debit_id   TEXT NOT NULL,
    credit_id  TEXT NOT NULL,
    points     BIGINT NOT NULL CHECK (points > 0),
    PRIMARY KEY (tenant_id, debit_id, credit_id),
    FOREIGN KEY (tenant_id, debit_id) REFERENCES loyalty_ledger(tenant_id, id),
    FOREIGN KEY (tenant_id, credit_id) REFERENCES loyalty_ledger(tenant_id, id)
);
CREATE INDEX loyalty_allocations_credit ON loyalty_allocations(tenant_id, credit_id);

CREATE TABLE loyalty_tier_changes (
    tenant_id    TEXT NOT NULL,
    id           TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    from_tier_id TEXT,
    to_tier_id   TEXT,
    reason       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES loyalty_accounts(tenant_id, customer_id)
);
