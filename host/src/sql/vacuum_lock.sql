-- Whether this session became the one that does the duty (a vacuum or an analyze of a
-- table) whose lock key is $1.
SELECT pg_try_advisory_lock($1)
