-- A new tenant $1, with the default for each setting not given ($2 weight, $3 memory
-- bytes, $4 timeout ms, $5 attempts, $6 payload bytes, $7 state bytes, $8 spawns per
-- run, $9 scheduled tasks, $10 runs in flight across the fleet and $11 spawns per
-- minute, NULL: no quota). A tenant of that name is left alone: no row then.
INSERT INTO tenants (name, weight, memory_bytes, timeout_ms, max_attempts,
                     max_payload_bytes, max_state_bytes, max_spawns, max_tasks,
                     max_running, max_spawns_per_minute)
VALUES ($1, coalesce($2, 1), coalesce($3, 67108864), coalesce($4, 5000), coalesce($5, 5),
        coalesce($6, 1048576), coalesce($7, 262144), coalesce($8, 1000), $9, $10, $11)
ON CONFLICT (name) DO NOTHING
