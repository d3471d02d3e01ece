-- A host's heartbeat: its row ($1 its liveness key, $2 version, $3 hostname, $4 pid, $5
-- claim mode, $6 workers, $7 most tasks in flight, $8 tasks in flight), written fresh,
-- and the rows of hosts that are gone (their liveness lock is free) deleted.
WITH gone AS (
    DELETE FROM hosts WHERE id <> $1 AND recur_host_gone(id)
)
INSERT INTO hosts (id, version, hostname, pid, claim_mode, workers, max_in_flight,
                   in_flight, started_at, last_seen)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now())
ON CONFLICT (id) DO UPDATE
SET in_flight = excluded.in_flight, last_seen = excluded.last_seen
