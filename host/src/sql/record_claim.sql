-- Record a locked claim, outside its transaction and before any of its tasks runs, so
-- that the record outlives a crash of the host: $1 the claim's key (its advisory lock),
-- $2 its tasks' ids, $3 the claiming host's liveness key. The batch's commit deletes it
-- in the claim's transaction (commit_locked.sql).
INSERT INTO claims (key, task_ids, host) VALUES ($1, $2, $3)
