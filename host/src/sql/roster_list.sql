-- The live hosts (they hold their liveness lock), oldest first, with how long ago each
-- last wrote its row.
SELECT id, version, hostname, pid, claim_mode, workers, max_in_flight, in_flight,
       started_at, last_seen,
       (extract(epoch FROM now() - last_seen) * 1000)::bigint AS seen_ms_ago
FROM hosts
WHERE NOT recur_host_gone(id)
ORDER BY started_at, id
