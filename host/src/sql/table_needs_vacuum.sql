-- What says whether a table needs a vacuum: its dead and newly inserted row versions,
-- its live rows, and whether a vacuum of it is running now. $1 the table's name.
SELECT s.n_dead_tup, coalesce((to_jsonb(s) ->> 'n_ins_since_vacuum')::bigint, 0),
       s.n_live_tup,
       EXISTS (SELECT 1 FROM pg_stat_progress_vacuum p WHERE p.relid = s.relid) AS running
FROM pg_stat_user_tables s
WHERE s.relid = $1::regclass
