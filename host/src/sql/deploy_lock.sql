-- Serializes deploys of one (tenant $1, task type $2) for the rest of the transaction,
-- since concurrent deploys would race for the next version number; deploys of other
-- types do not wait.
SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 7031))
