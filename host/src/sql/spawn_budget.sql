-- Draws spawns from each tenant's budgets, $1 the tenants and $2 the spawns each asks for,
-- side by side; returns what each was granted, and whether its room under max_tasks
-- was what fell short. Two budgets:
--   - its room under max_tasks (migrations/0017), as the last count left it: a tenant
--     with the quota but no count yet is granted what it asks for;
--   - its spawns per minute (migrations/0014), for the current minute by the database's
--     clock, asked for what the room granted: all of it while the budget holds it,
--     then what is left. The quota is read here, not from the host's copy of the
--     tenant's limits. The tenants' earlier minutes are deleted as the draw goes.
-- A tenant with neither quota (any more) is granted everything. Two hosts drawing at
-- once for one tenant queue on its rows, and the second draws from what the first left
-- (a row is re-read once its lock is had). What the minute refuses of what the room
-- granted stays drawn from the room, until the next count: the budgets err towards
-- fewer spawns.
WITH pruned AS (
    DELETE FROM spawn_minutes
    WHERE tenant = ANY($1::text[]) AND minute < date_trunc('minute', now())
),
asked AS (
    SELECT a.tenant, a.wanted, t.max_spawns_per_minute AS per_minute
    FROM unnest($1::text[], $2::bigint[]) AS a (tenant, wanted)
    JOIN tenants AS t ON t.name = a.tenant
),
room AS (
    UPDATE task_room AS r
    SET granted = least(a.wanted, greatest(r.room, 0)),
        room = r.room - least(a.wanted, greatest(r.room, 0))
    FROM asked AS a
    WHERE r.tenant = a.tenant
    RETURNING r.tenant, r.granted
),
roomed AS (
    SELECT a.tenant, a.per_minute, coalesce(r.granted, a.wanted) AS wanted,
           coalesce(r.granted < a.wanted, false) AS short
    FROM asked AS a
    LEFT JOIN room AS r ON r.tenant = a.tenant
),
minute AS (
    INSERT INTO spawn_minutes AS s (tenant, minute, spawned, wanted, granted)
    SELECT tenant, date_trunc('minute', now()), least(wanted, per_minute), wanted,
           least(wanted, per_minute)
    FROM roomed
    WHERE per_minute IS NOT NULL
    ON CONFLICT (tenant, minute) DO UPDATE
    SET granted = least(excluded.wanted, greatest(
            coalesce((SELECT max_spawns_per_minute FROM tenants WHERE name = s.tenant),
                     s.spawned + excluded.wanted) - s.spawned, 0)),
        spawned = s.spawned + least(excluded.wanted, greatest(
            coalesce((SELECT max_spawns_per_minute FROM tenants WHERE name = s.tenant),
                     s.spawned + excluded.wanted) - s.spawned, 0)),
        wanted = excluded.wanted
    RETURNING s.tenant, s.granted
)
SELECT r.tenant, coalesce(m.granted, r.wanted) AS granted, r.short AS short_of_room
FROM roomed AS r
LEFT JOIN minute AS m ON m.tenant = r.tenant
