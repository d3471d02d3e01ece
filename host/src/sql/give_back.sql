-- Return leased tasks that never ran, as if they had not been leased: due at their old
-- time, unleased, the lease's attempt undone. Fenced by the lease token, so a task
-- another host has taken over since is left alone.
-- $1 ids, $2 lease tokens, $3 the times the tasks were due. The run slots the tasks
-- hold (claim_timed.sql) are freed too.
WITH freed AS (
    UPDATE run_slots AS r
    SET task_id = NULL, lease_token = NULL, until = NULL
    FROM unnest($1::bigint[], $2::uuid[]) AS g(id, token)
    WHERE r.task_id = g.id AND r.lease_token = g.token
)
UPDATE tasks AS t
SET next_run_at = g.scheduled_at,
    lease_token = NULL,
    due_at      = NULL,
    attempt     = greatest(t.attempt - 1, 0),
    updated_at  = now()
FROM unnest($1::bigint[], $2::uuid[], $3::timestamptz[]) AS g(id, token, scheduled_at)
WHERE t.id = g.id
  AND t.lease_token = g.token
