-- The active version of every deployed (tenant, task type), with its tenant's limits
-- (the defaults where the tenant set none): what a host's module cache compares itself
-- with to notice new deployments and changed limits.
SELECT m.tenant, m.task_type, m.version,
       coalesce(t.memory_bytes, 67108864) AS memory_bytes,
       coalesce(t.timeout_ms, 5000)       AS timeout_ms,
       coalesce(t.max_attempts, 5)        AS max_attempts,
       coalesce(t.max_state_bytes, 262144) AS max_state_bytes,
       coalesce(t.max_spawns, 1000)       AS max_spawns,
       coalesce(t.max_payload_bytes, 1048576) AS max_payload_bytes,
       t.max_spawns_per_minute, t.max_tasks
FROM modules m LEFT JOIN tenants t ON t.name = m.tenant
WHERE m.active
