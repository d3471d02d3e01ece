-- Counts per tenant and task type: scheduled, due, running, failed, done, erroring, and
-- how late the oldest due task is. It scans the table.
SELECT tenant, task_type,
       count(*) FILTER (WHERE status = 0 AND next_run_at > now() AND lease_token IS NULL) AS scheduled,
       count(*) FILTER (WHERE status = 0 AND next_run_at <= now())                        AS due,
       count(*) FILTER (WHERE status = 0 AND next_run_at > now() AND lease_token IS NOT NULL) AS running,
       count(*) FILTER (WHERE status = 2) AS failed,
       count(*) FILTER (WHERE status = 1) AS done,
       coalesce((extract(epoch FROM now() - min(next_run_at) FILTER (WHERE status = 0 AND next_run_at <= now())) * 1000)::bigint, 0) AS lag_ms,
       count(*) FILTER (WHERE status = 0 AND last_error IS NOT NULL) AS erroring
FROM tasks
GROUP BY tenant, task_type
ORDER BY tenant, task_type
