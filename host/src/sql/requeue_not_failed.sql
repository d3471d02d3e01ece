-- Of the keys $3 of tenant $1 and type $2, the first few that name no failed task
-- (none at all, or one in another state): what `recur requeue` refuses, and why.
SELECT k.key, t.status
FROM unnest($3::text[]) AS k(key)
LEFT JOIN task_keys AS tk ON tk.tenant = $1 AND tk.task_type = $2 AND tk.key = k.key
LEFT JOIN tasks AS t ON t.id = tk.id
WHERE t.status IS DISTINCT FROM 2
ORDER BY k.key
LIMIT 10
