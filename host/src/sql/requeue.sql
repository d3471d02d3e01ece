-- Put tasks parked as failed back to work, due now with their attempts reset: every
-- failed task of tenant $1 and type $2, or only those whose keys are in $3.
UPDATE tasks
SET status = 0, attempt = 0, next_run_at = now(), lease_token = NULL, due_at = NULL,
    last_error = NULL, updated_at = now()
WHERE tenant = $1 AND task_type = $2 AND status = 2
  AND ($3::text[] IS NULL
       OR id IN (SELECT id FROM task_keys
                 WHERE tenant = $1 AND task_type = $2 AND key = ANY($3::text[])))
