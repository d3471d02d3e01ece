-- Every tenant by name, or only $1 (NULL: all), with its settings, its login role and
-- how many active modules it has. A tenant's role sees its own row only.
SELECT t.name, t.role, t.weight, t.memory_bytes, t.timeout_ms, t.max_attempts,
       t.max_payload_bytes, t.max_state_bytes, t.max_spawns, t.max_tasks, t.max_running,
       t.max_spawns_per_minute,
       t.created_at,
       (SELECT count(*) FROM modules AS m WHERE m.tenant = t.name AND m.active) AS modules
FROM tenants AS t
WHERE $1::text IS NULL OR t.name = $1
ORDER BY t.name COLLATE "C"
