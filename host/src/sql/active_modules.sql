-- The active version of every deployed (tenant, task type), with its tenant's limits
-- (the defaults where the tenant set none): what a host's module cache compares itself
-- with to notice new deployments and changed limits.
SELECT m.tenant, m.task_type, m.version,
       coalesce(t.memory_bytes, 67108864) AS memory_bytes,
       coalesce(t.timeout_ms, 5000)       AS timeout_ms,
       coalesce(t.max_attempts, 5)        AS max_attempts
FROM modules m LEFT JOIN tenants t ON t.name = m.tenant
WHERE m.active
