-- Tasks as an operator reads them, newest change first: $1 status (NULL: any), $2 tenant
-- (NULL: any), $3 task type (NULL: any), $4 at most this many. Failed tasks come from
-- their own index (tasks_failed); the others by the primary key, newest first, so that
-- a large table is not sorted whole.
SELECT id, tenant, task_type, key, status, next_run_at,
       lease_token IS NOT NULL AND next_run_at > now() AS running,
       attempt, runs, last_error, octet_length(payload) AS payload_bytes,
       octet_length(state) AS state_bytes, created_at, updated_at
FROM tasks
WHERE ($1::smallint IS NULL OR status = $1)
  AND ($2::text IS NULL OR tenant = $2)
  AND ($3::text IS NULL OR task_type = $3)
ORDER BY CASE WHEN $1::smallint = 2 THEN updated_at END DESC NULLS LAST, id DESC
LIMIT $4
