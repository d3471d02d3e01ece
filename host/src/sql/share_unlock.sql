-- Drop the session's advisory locks.
SELECT pg_advisory_unlock_all()
