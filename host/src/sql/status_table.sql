-- The tasks table's size, dead row versions, fillfactor, and how many of the next $1
-- due tasks share a heap page on average.
SELECT pg_relation_size('tasks') AS heap_bytes,
       pg_indexes_size('tasks') AS index_bytes,
       coalesce((SELECT n_dead_tup FROM pg_stat_user_tables
                 WHERE relid = 'tasks'::regclass), 0) AS dead_tuples,
       coalesce((SELECT option_value::int FROM pg_class, pg_options_to_table(reloptions)
                 WHERE oid = 'tasks'::regclass AND option_name = 'fillfactor'), 100) AS fillfactor,
       (SELECT count(*)::float8 / nullif(count(DISTINCT (ctid::text::point)[0]), 0)
        FROM (SELECT ctid FROM tasks WHERE status = 0 ORDER BY next_run_at LIMIT $1) AS next)
           AS due_per_page
