-- Retire the active version of (tenant $1, task type $2); the deploy inserts the next.
UPDATE modules SET active = false WHERE tenant = $1 AND task_type = $2 AND active
