-- Rows changed in a table since its statistics were last gathered, and the row count
-- those statistics hold (-1, or 0, before the first ANALYZE). $1 the table's name.
SELECT s.n_mod_since_analyze, greatest(c.reltuples, 0)::bigint
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
WHERE s.relid = $1::regclass
