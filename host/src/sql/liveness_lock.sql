-- Take the host's liveness lock $1 for the session, waiting while another holds it.
SELECT pg_advisory_lock($1)
