-- The next version of (tenant $1, task type $2), active: sha256 $3, component $4, and
-- whether a worker may keep its instance for the next run ($5).
INSERT INTO modules (tenant, task_type, version, sha256, component, reuse_instance)
SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5
FROM modules WHERE tenant = $1 AND task_type = $2
RETURNING version
