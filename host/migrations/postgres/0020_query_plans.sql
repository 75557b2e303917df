-- Indexes that make the intended plan of a hot query the only sensible one,
-- whatever the planner's statistics say (issue #18). Append-only; kept in
-- lock-step with the other backend's 0020_query_plans.sql.
--
-- A replayed rewarded ingest reads back the ledger entries its reward
-- plugins wrote (`reward_entries_tx`: tenant, interaction, key prefix). No
-- index led with the interaction, so both backends scanned the tenant's
-- ledger through one of its unique indexes and filtered it (PostgreSQL:
-- 7,032 rows removed by filter, 6.7 ms, on a 29k-row tenant).
CREATE INDEX loyalty_ledger_interaction ON loyalty_ledger(tenant_id, interaction_id);
