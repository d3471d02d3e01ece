-- Enqueue a few tasks in one statement, given as parallel arrays. A key that exists, in
-- the table or earlier in the arrays, leaves the existing task alone. A task without a
-- first run time is due at the transaction's now().
-- $1 tenants, $2 task types, $3 keys, $4 payloads, $5 first runs (NULL: now).
INSERT INTO tasks (tenant, task_type, key, payload, next_run_at)
SELECT tenant, task_type, key, payload, coalesce(run_at, now())
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::timestamptz[])
     AS n(tenant, task_type, key, payload, run_at)
ON CONFLICT ON CONSTRAINT tasks_unique_key DO NOTHING
