-- The active module of every (tenant, task type), without its bytes.
SELECT tenant, task_type, version, sha256, octet_length(component) AS size_bytes,
       reuse_instance, created_at
FROM modules WHERE active ORDER BY tenant, task_type
