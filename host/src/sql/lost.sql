-- Count what claims left behind by dead locked batches that no claim has taken over:
-- tasks since run under timed leases, or left undue. A claims row whose advisory lock
-- nobody holds, older than $1 ms (claims take over fresh ones themselves, in step with
-- their own commit: see claim_locked.sql), adds an attempt to each of its tasks not written
-- since, if its host is gone (its liveness lock is free, see liveness.rs); a live host's
-- row is only deleted. Tasks locked by a claim right now are skipped: their claim is
-- running them.
WITH lost AS (
    DELETE FROM claims
    WHERE claimed_at < now() - $1::bigint * interval '1 millisecond'
      AND pg_try_advisory_xact_lock(key)
    RETURNING task_ids, claimed_at, host
),
lost_runs AS (
    SELECT unnest(task_ids) AS id, claimed_at
    FROM lost
    WHERE recur_host_gone(host)
),
free AS (
    SELECT id, updated_at
    FROM tasks
    WHERE id IN (SELECT id FROM lost_runs)
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks AS t
SET attempt = t.attempt + c.n
FROM (SELECT r.id, count(*) AS n
      FROM lost_runs AS r JOIN free AS f ON f.id = r.id
      WHERE f.updated_at <= r.claimed_at
      GROUP BY r.id) AS c
WHERE t.id = c.id
  AND t.status = 0
