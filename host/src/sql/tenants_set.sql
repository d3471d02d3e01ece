-- Changes the settings of tenant $1 that are given: $2 weight, $3 memory bytes, $4
-- timeout ms, $5 attempts (NULL: unchanged). No row when there is no such tenant.
UPDATE tenants
SET weight       = coalesce($2, weight),
    memory_bytes = coalesce($3, memory_bytes),
    timeout_ms   = coalesce($4, timeout_ms),
    max_attempts = coalesce($5, max_attempts),
    updated_at   = now()
WHERE name = $1
