-- Imports schedule one scoring job instead of queueing every imported
-- customer for the background rescore worker (postgres; kept in lock-step with
-- ../sqlite/0030_import_scoring_jobs.sql).
--
-- origin: 'api' for a job its creator runs at once (POST /v1/scoring/jobs,
-- `rapport score`); 'import' for one `rapport import` leaves queued, which
-- the rescore worker of any node starts (the import command has no plugin
-- runtime, and the server may not even be up while it runs).
ALTER TABLE scoring_jobs ADD COLUMN origin TEXT NOT NULL DEFAULT 'api';
CREATE INDEX scoring_jobs_queued ON scoring_jobs(status, origin);
