-- Leases on the rescore queue (PostgreSQL). Append-only; kept in lock-step with
-- ../sqlite/0006_rescore_leases.sql.
--
-- Every node runs the rescore worker; without leases two nodes on one
-- database could pick the same queued customers and run every scoring
-- plugin on them twice. A worker now claims a batch (`lease_owner` = its
-- node, `lease_expires_at`), others skip leased entries until the lease
-- expires (its node died or stalled), and the ack deletes an entry only if
-- its `generation` is unchanged and the lease is still the claim's; an
-- entry re-enqueued meanwhile is unleased instead, so it is rescored again.
-- NULL lease = nobody holds it.
ALTER TABLE rescore_queue ADD COLUMN lease_owner TEXT;
ALTER TABLE rescore_queue ADD COLUMN lease_expires_at BIGINT;
