-- Makes scheduled task $1 due now, unless a live timed lease holds it (it is running). A
-- row a locked claim holds is waited for, and made due once its batch has committed.
UPDATE tasks
SET next_run_at = now(), updated_at = now()
WHERE id = $1 AND status = 0
  AND NOT (lease_token IS NOT NULL AND next_run_at > now())
RETURNING id
