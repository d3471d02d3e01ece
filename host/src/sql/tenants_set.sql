-- Changes the settings of tenant $1 that are given: $2 weight, $3 memory bytes, $4
-- timeout ms, $5 attempts, $6 payload bytes, $7 state bytes, $8 spawns per run (NULL:
-- unchanged), when $9, $10 scheduled tasks, when $11, $12 runs in flight across the
-- fleet, and when $13, $14 spawns per minute (NULL: no quota). No row when there is no
-- such tenant.
UPDATE tenants
SET weight       = coalesce($2, weight),
    memory_bytes = coalesce($3, memory_bytes),
    timeout_ms   = coalesce($4, timeout_ms),
    max_attempts = coalesce($5, max_attempts),
    max_payload_bytes = coalesce($6, max_payload_bytes),
    max_state_bytes = coalesce($7, max_state_bytes),
    max_spawns = coalesce($8, max_spawns),
    max_tasks = CASE WHEN $9 THEN $10 ELSE max_tasks END,
    max_running = CASE WHEN $11 THEN $12 ELSE max_running END,
    max_spawns_per_minute = CASE WHEN $13 THEN $14 ELSE max_spawns_per_minute END,
    updated_at   = now()
WHERE name = $1
