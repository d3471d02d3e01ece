-- Counts the room each tenant with a max_tasks has left (migrations/0017): its quota less
-- its scheduled tasks, counted up to one past the quota. Tenants without the quota lose
-- their row.
WITH dropped AS (
    DELETE FROM task_room AS r
    WHERE NOT EXISTS (SELECT FROM tenants AS t WHERE t.name = r.tenant AND t.max_tasks IS NOT NULL)
)
INSERT INTO task_room (tenant, room, counted_at)
SELECT t.name, t.max_tasks - c.n, now()
FROM tenants AS t
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT FROM tasks WHERE tenant = t.name AND status = 0 LIMIT t.max_tasks + 1
    ) AS s) AS c
WHERE t.max_tasks IS NOT NULL
ON CONFLICT (tenant) DO UPDATE SET room = excluded.room, counted_at = excluded.counted_at
