-- Claim up to $1 due tasks under row locks, inside the caller's transaction, without
-- writing them: the outcomes are written later in the same transaction, so one
-- execution costs one row write instead of two. The locks are the lease: other hosts
-- skip these rows, and if this host dies its connection's transaction aborts and the
-- tasks are due again at once. A task whose timed lease ran out is due since due_at.
-- The row version (xmin) lets a commit made after the locks are lost apply only to rows
-- nobody has written since, and where it lies (ctid) lets the commit find each row
-- without the primary key's index (commit_locked.sql).
--
-- A locked batch that died leaves its claims row behind (see migrations/0002). The claim
-- takes over those rows for the tasks it claims: it deletes them (putting back the other
-- tasks' ids) and adds one attempt per lost batch to each claimed task not written since.
-- Only batches whose host is gone count (its liveness lock is free, see liveness.rs): a
-- live host's claim that was cut or outlived its lease is repeated, not charged. All of
-- that is in this transaction, so it becomes permanent only with the batch's commit; if
-- this batch dies too, the rows come back and the next claim counts both. Likewise a
-- task whose timed lease ran out gets a new attempt number only if that lease's host
-- (named by the token's first eight bytes) is gone. `lost_runs` says how many of the
-- attempt are those lost batches' tries: a task the batch gives back unrun keeps them
-- (keep_lost_runs.sql).
-- $1 batch size, $2 task types (NULL: all), $3, $7 and $9 the claim cursor, side by side:
-- for each tenant it names, the due time of the last task the host's previous claim took
-- from that tenant and where that task lies (its ctid); a tenant it does not name starts
-- from the front (see claim/cursor.rs), $4 tenants (NULL: all), $5 and $6 the (tenant,
-- task type) pairs not to claim, side by side (NULL: none): those whose module the host
-- is compiling, which would only wait in the host (see registry/mod.rs), $8 the most
-- bytes of payload and state to take, $10 tenants not to claim for: those whose jobs wait
-- in the host behind their cap of long runs (see execute/queue.rs).
--
-- The batch is shared fairly between tenants as in claim_timed.sql, which says how, and
-- a tenant with a quota on its runs in flight takes a task only with a slot it locks
-- (`slots`), as there; here the slot's row lock is what holds it, until this batch's
-- transaction ends, so the claim writes nothing to it.
WITH active AS MATERIALIZED (
    -- Each tenant with due work past its cursor: the front of its queue is the host's
    -- own batches in flight, and the row versions their commits left dead, which the
    -- claims past the cursor never pass to clean up.
    SELECT n.name AS tenant, n.weight, n.max_running, d.oldest, c.due AS after_due, c.at AS after_at
    FROM tenants AS n
    LEFT JOIN unnest($3::text[], $7::timestamptz[], $9::tid[]) AS c (tenant, due, at)
        ON c.tenant = n.name
    CROSS JOIN LATERAL (
        SELECT next_run_at AS oldest FROM tasks
        WHERE tenant = n.name AND status = 0
          AND next_run_at >= coalesce(c.due, '-infinity')
        ORDER BY next_run_at LIMIT 1) AS d
    WHERE d.oldest <= now()
      AND NOT n.name = ANY($10::text[])
      AND ($4::text[] IS NULL OR n.name = ANY($4::text[]))
),
shares AS (
    SELECT tenant, max_running, after_due, after_at,
           base + (row_number() OVER (ORDER BY oldest, tenant) <= $1 - sum(base) OVER ())::int
               AS share
    FROM (SELECT *, floor($1 * weight::numeric / sum(weight) OVER ())::bigint AS base
          FROM active) AS a
),
slots AS MATERIALIZED (
    SELECT r.tenant FROM shares AS s CROSS JOIN LATERAL (
        SELECT r.tenant
        FROM run_slots AS r
        WHERE r.tenant = s.tenant
          AND (r.lease_token IS NULL OR r.until < now())
        ORDER BY r.slot
        LIMIT s.share
        FOR UPDATE SKIP LOCKED) AS r
    WHERE s.max_running IS NOT NULL
),
first AS MATERIALIZED (
    SELECT d.* FROM shares AS s CROSS JOIN LATERAL (
        SELECT id, tenant, task_type, key, payload, state, attempt, runs,
               coalesce(due_at, next_run_at) AS scheduled_at, lease_token,
               xmin::text::bigint AS row_version, ctid, updated_at, next_run_at,
               octet_length(payload) + coalesce(octet_length(state), 0) AS bytes
        FROM tasks
        WHERE tenant = s.tenant AND status = 0 AND next_run_at <= now()
          AND next_run_at >= coalesce(s.after_due, '-infinity')
          -- Rows due at the cursor's time come in the order they lie in the table: those
          -- up to the last one taken were passed over by the previous claim. Checked
          -- before the row lock is tried, which is what a row held by a batch in flight
          -- costs.
          AND (s.after_at IS NULL OR next_run_at > s.after_due OR ctid > s.after_at)
          AND ($2::text[] IS NULL OR task_type = ANY($2::text[]))
          AND ($5::text[] IS NULL
               OR (tenant, task_type) NOT IN (SELECT * FROM unnest($5::text[], $6::text[])))
        ORDER BY next_run_at
        LIMIT CASE WHEN s.max_running IS NULL THEN s.share
                   ELSE (SELECT count(*) FROM slots WHERE slots.tenant = s.tenant) END
        FOR UPDATE SKIP LOCKED) AS d
),
more AS (
    SELECT s.*
    FROM shares AS s
    JOIN (SELECT tenant, count(*) AS took FROM first GROUP BY tenant) AS f USING (tenant)
    WHERE f.took = s.share AND s.max_running IS NULL
),
second AS MATERIALIZED (
    SELECT d.* FROM more AS s CROSS JOIN LATERAL (
        SELECT id, tenant, task_type, key, payload, state, attempt, runs,
               coalesce(due_at, next_run_at) AS scheduled_at, lease_token,
               xmin::text::bigint AS row_version, ctid, updated_at, next_run_at,
               octet_length(payload) + coalesce(octet_length(state), 0) AS bytes
        FROM tasks
        WHERE tenant = s.tenant AND status = 0 AND next_run_at <= now()
          AND next_run_at >= coalesce(s.after_due, '-infinity')
          AND (s.after_at IS NULL OR next_run_at > s.after_due OR ctid > s.after_at)
          AND id NOT IN (SELECT id FROM first)
          AND ($2::text[] IS NULL OR task_type = ANY($2::text[]))
          AND ($5::text[] IS NULL
               OR (tenant, task_type) NOT IN (SELECT * FROM unnest($5::text[], $6::text[])))
        ORDER BY next_run_at
        LIMIT (SELECT $1 - count(*) FROM first)
        FOR UPDATE SKIP LOCKED) AS d
),
-- What the second round locked past the rest of the batch stays locked until this batch
-- commits, and is due as before, as the rows over the byte budget below are.
claimed AS (
    SELECT * FROM first
    UNION ALL
    (SELECT * FROM second ORDER BY next_run_at LIMIT (SELECT $1 - count(*) FROM first))
),
-- The rows past the batch's budget of $8 bytes of payload and state, in the order they
-- were locked, but never the first: they stay locked until this batch commits, and are
-- due as before (see CLAIM_MAX_BYTES in claim/mod.rs). Computed only where the batch is
-- over its budget, so that a batch of small tasks pays one sum.
over AS (
    SELECT id
    FROM (SELECT id, sum(bytes) OVER (ROWS UNBOUNDED PRECEDING) AS upto,
                 row_number() OVER () AS n
          FROM claimed
          WHERE (SELECT sum(bytes) FROM claimed) > $8) AS s
    WHERE upto > $8 AND n > 1
),
-- The ids taken, for the lost batches' bookkeeping below, which reads them only where
-- a lost batch is found.
taken AS (
    SELECT id FROM claimed WHERE id NOT IN (SELECT id FROM over)
),
lost AS (
    -- A claims row whose advisory lock nobody holds belongs to a batch that is gone.
    -- The CASE keeps the overlap test to those few rows.
    DELETE FROM claims
    WHERE CASE WHEN pg_try_advisory_xact_lock(key)
               THEN task_ids && ARRAY(SELECT id FROM taken)
               ELSE false END
    RETURNING key, task_ids, claimed_at, host
),
kept AS (
    -- `OFFSET 0` keeps the subquery whole: pulled up into the outer query, its `rest`
    -- would be computed twice, once for the column and once for the filter.
    INSERT INTO claims (key, task_ids, claimed_at, host)
    SELECT key, rest, claimed_at, host
    FROM (SELECT key, claimed_at, host,
                 ARRAY(SELECT unnest(task_ids) EXCEPT SELECT id FROM taken) AS rest
          FROM lost OFFSET 0) AS r
    WHERE cardinality(rest) > 0
),
lost_runs AS (
    SELECT l.id, count(*) AS n
    FROM (SELECT unnest(task_ids) AS id, claimed_at FROM lost WHERE recur_host_gone(host)) AS l
    JOIN claimed AS c ON c.id = l.id
    WHERE c.updated_at <= l.claimed_at AND c.id NOT IN (SELECT id FROM over)
    GROUP BY l.id
)
-- The batch as one row of arrays, a column each: the host reads them in place
-- (claim/arrays.rs), where a row per task cost it a message, a row and a value per column.
-- In no set order: the host puts the batch in due order itself (claim/locked.rs), for a
-- few microseconds a batch, where an ORDER BY here sorted copies of the whole rows.
SELECT array_agg(c.id) AS id, array_agg(c.tenant) AS tenant,
       array_agg(c.task_type) AS task_type, array_agg(c.key) AS key,
       array_agg(c.payload) AS payload, array_agg(c.state) AS state,
       array_agg(c.attempt + coalesce(r.n, 0)::integer
                 + CASE WHEN c.lease_token IS NULL THEN 1
                        WHEN recur_host_gone(recur_token_host(c.lease_token)) THEN 1
                        ELSE 0 END) AS attempt,
       array_agg(coalesce(r.n, 0)::integer) AS lost_runs,
       array_agg(c.runs) AS runs, array_agg(c.scheduled_at) AS scheduled_at,
       array_agg(c.lease_token) AS lease_token, array_agg(c.row_version) AS row_version,
       array_agg(c.ctid) AS row_at, array_agg(c.next_run_at) AS next_run_at
FROM claimed AS c
LEFT JOIN lost_runs AS r ON r.id = c.id
WHERE c.id NOT IN (SELECT id FROM over)
