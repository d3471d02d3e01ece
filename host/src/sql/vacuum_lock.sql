-- Whether this session became the one that vacuums the table whose lock key is $1.
SELECT pg_try_advisory_lock($1)
