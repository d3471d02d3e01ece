-- The active versions of the (tenant, task type) pairs side by side in $1 and $2, with
-- their tenant's limits. A component whose sha256 is in $3 (the host has compiled it, or
-- is compiling it, for another pair) comes without its bytes: many tenants may have
-- deployed the same one.
SELECT m.tenant, m.task_type, m.version, m.sha256, m.reuse_instance,
       CASE WHEN m.sha256 = ANY($3::text[]) THEN NULL ELSE m.component END AS component,
       coalesce(t.memory_bytes, 67108864) AS memory_bytes,
       coalesce(t.timeout_ms, 5000)       AS timeout_ms,
       coalesce(t.max_attempts, 5)        AS max_attempts,
       coalesce(t.max_state_bytes, 262144) AS max_state_bytes,
       coalesce(t.max_spawns, 1000)       AS max_spawns,
       coalesce(t.max_payload_bytes, 1048576) AS max_payload_bytes,
       t.max_spawns_per_minute, t.max_tasks
FROM modules m LEFT JOIN tenants t ON t.name = m.tenant
WHERE m.active
  AND (m.tenant, m.task_type) IN (SELECT * FROM unnest($1::text[], $2::text[]))
