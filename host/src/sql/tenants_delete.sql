-- Deletes tenant $1 and, when $2 (force), its tasks and modules (deleting a task frees
-- its key, see migrations/0005). Returns what the tenant owned, counted before; the
-- caller rolls back when it owned something and $2 is false. No row when there is no
-- such tenant.
WITH owned AS MATERIALIZED (
    SELECT (SELECT count(*) FROM task_keys WHERE tenant = $1) AS tasks,
           (SELECT count(*) FROM modules WHERE tenant = $1) AS modules
),
gone_tasks AS (
    DELETE FROM tasks WHERE tenant = $1 AND $2
),
gone_modules AS (
    DELETE FROM modules WHERE tenant = $1 AND $2
)
DELETE FROM tenants AS t
USING owned
WHERE t.name = $1
RETURNING owned.tasks, owned.modules, t.role
