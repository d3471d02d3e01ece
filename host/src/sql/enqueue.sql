-- Enqueue a few tasks in one statement, given as parallel arrays. A key that exists, in
-- the table or earlier in the arrays, leaves the existing task alone. A task without a
-- first run time is due at the transaction's now().
-- Each task draws its id first, then its key is written to task_keys with that id, and
-- only the tasks whose key went in are created (see migrations/0005). MATERIALIZED, so
-- both inserts read the same ids.
-- $1 tenants, $2 task types, $3 keys, $4 payloads, $5 first runs (NULL: now), $6 ids
-- drawn beforehand (NULL, or an array of NULLs: drawn here, in the arrays' order).
WITH new AS MATERIALIZED (
    SELECT coalesce(id, nextval('tasks_id_seq')) AS id, tenant, task_type, key, payload, run_at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::timestamptz[], $6::int8[])
         AS n(tenant, task_type, key, payload, run_at, id)
),
keyed AS (
    -- In key order, so that concurrent enqueues of the same keys cannot deadlock (see
    -- commit_timed.sql); a key repeated in the arrays goes in first with its first id, so the
    -- first one stays. The ids themselves keep the arrays' order.
    INSERT INTO task_keys (tenant, task_type, key, id)
    SELECT tenant, task_type, key, id FROM new
    ORDER BY tenant COLLATE "C", task_type COLLATE "C", key COLLATE "C", id
    ON CONFLICT DO NOTHING
    RETURNING id
)
INSERT INTO tasks (id, tenant, task_type, key, payload, next_run_at)
SELECT n.id, n.tenant, n.task_type, n.key, n.payload, coalesce(n.run_at, now())
FROM new AS n
JOIN keyed AS k ON k.id = n.id
