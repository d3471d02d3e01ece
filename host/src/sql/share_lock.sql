-- Take this connection's lock ($1, its backend pid) while it sends its share of a load,
-- and return the second key.
SELECT pg_backend_pid() FROM pg_advisory_lock($1, pg_backend_pid())
