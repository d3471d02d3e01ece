-- Claim up to $1 due tasks under row locks, inside the caller's transaction, without
-- writing them: the outcomes are written later in the same transaction, so one
-- execution costs one row write instead of two. The locks are the lease: other hosts
-- skip these rows, and if this host dies its connection's transaction aborts and the
-- tasks are due again at once.
-- $1 batch size, $2 task types (NULL: all).
SELECT id, tenant, task_type, key, payload, state, attempt + 1 AS attempt, runs,
       next_run_at AS scheduled_at, lease_token
FROM tasks
WHERE status = 0
  AND next_run_at <= now()
  AND ($2::text[] IS NULL OR task_type = ANY($2::text[]))
ORDER BY next_run_at
LIMIT $1
FOR UPDATE SKIP LOCKED
