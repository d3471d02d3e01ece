-- The active version of (tenant $1, task type $2), if any.
SELECT version, sha256, reuse_instance FROM modules
WHERE tenant = $1 AND task_type = $2 AND active
