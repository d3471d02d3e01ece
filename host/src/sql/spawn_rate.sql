-- Draws spawns from each tenant's budget for the current minute (migrations/0014), $1
-- the tenants and $2 the spawns each asks for, side by side; returns what each was
-- granted: all it asked for while the budget holds it, then what is left. The quota is
-- read here, not from the host's copy of the tenant's limits, and a tenant without one
-- (any more) is granted everything. Two hosts drawing at once for one tenant queue on
-- its row, and the second draws from what the first left (the row is re-read once its
-- lock is had). The tenants' earlier minutes are deleted as the draw goes.
WITH pruned AS (
    DELETE FROM spawn_minutes
    WHERE tenant = ANY($1::text[]) AND minute < date_trunc('minute', now())
),
asked AS (
    SELECT a.tenant, a.wanted,
           coalesce(t.max_spawns_per_minute::bigint, a.wanted) AS quota
    FROM unnest($1::text[], $2::bigint[]) AS a (tenant, wanted)
    JOIN tenants AS t ON t.name = a.tenant
)
INSERT INTO spawn_minutes AS s (tenant, minute, spawned, wanted, granted)
SELECT tenant, date_trunc('minute', now()), least(wanted, quota), wanted, least(wanted, quota)
FROM asked
ON CONFLICT (tenant, minute) DO UPDATE
SET granted = least(excluded.wanted, greatest(
        coalesce((SELECT max_spawns_per_minute FROM tenants WHERE name = s.tenant),
                 s.spawned + excluded.wanted) - s.spawned, 0)),
    spawned = s.spawned + least(excluded.wanted, greatest(
        coalesce((SELECT max_spawns_per_minute FROM tenants WHERE name = s.tenant),
                 s.spawned + excluded.wanted) - s.spawned, 0)),
    wanted = excluded.wanted
RETURNING s.tenant, s.granted
