-- One task, by id ($1), or by its tenant, type and key ($2, $3, $4), with its payload and
-- state.
SELECT id, tenant, task_type, key, status, next_run_at,
       lease_token IS NOT NULL AND next_run_at > now() AS running,
       attempt, runs, last_error, octet_length(payload) AS payload_bytes,
       octet_length(state) AS state_bytes, created_at, updated_at, payload, state
FROM tasks
WHERE CASE WHEN $1::bigint IS NOT NULL THEN id = $1
           ELSE id = (SELECT k.id FROM task_keys AS k
                      WHERE k.tenant = $2 AND k.task_type = $3 AND k.key = $4) END
