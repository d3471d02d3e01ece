-- Claim up to $1 due tasks and push them out of every other host's way.
-- $1 batch size, $2 lease timeout in ms, $3 task types (NULL: all), $4 lease token,
-- $5 tenants (NULL: all), $6 and $7 the (tenant, task type) pairs not to claim, side by
-- side (NULL: none): those whose module the host is compiling (see registry/mod.rs), $8
-- the most bytes of payload and state to take, $9 tenants not to claim for: those whose
-- jobs wait in the host behind their cap of long runs (see execute/queue.rs).
-- SKIP LOCKED lets concurrent hosts claim disjoint batches without waiting on each
-- other; moving next_run_at forward is the lease itself, so a host that dies leaves
-- tasks that are due again when the lease runs out, with no rescuer process. The due
-- time the lease displaces is kept in due_at (the first one, if an earlier lease ran
-- out), and returned as the run's scheduled time. The lease counts an attempt, unless it
-- takes over from a lease that ran out on a host that is still alive (the token's first
-- eight bytes name its host's liveness lock, see liveness.rs): that run is repeated
-- under the same attempt number, not charged to the task.
--
-- The batch is shared fairly between tenants (see docs/operating.md, "Fair claims"):
-- each tenant with due work gets a share of the $1 tasks in proportion to its weight,
-- and takes it from the front of its own queue (`first`); what the tenants with fewer
-- due tasks than their share leave goes to those that filled theirs, oldest due first
-- (`second`). The shares are whole numbers that add up to $1: each tenant's exact share
-- rounded down, and one more task each for as many tenants as that leaves tasks, in the
-- order of their oldest due task: where tenants outnumber the batch, the longest waiting
-- get a task first.
--
-- A tenant with a quota on its runs in flight (tenants.max_running, migrations/0013)
-- takes no more of its share than it can lock free slots for (`slots`), and none in the
-- second round; the slots it takes are marked with its tasks' ids and this lease
-- (`held`), and are free again once the task's outcome is committed or the task is
-- given back (both clear the slot), or the lease has run out. A slot is judged free by
-- its own row alone: a claim that finds a slot another claim took after this
-- statement's snapshot rechecks the slot's newest version, which says it is held,
-- where the tasks table, read in the snapshot, would not.
WITH active AS MATERIALIZED (
    -- Each tenant with due work, its weight, and how late its oldest due task is: one
    -- probe of the due index per tenant.
    SELECT n.name AS tenant, n.weight, n.max_running, d.oldest
    FROM tenants AS n
    CROSS JOIN LATERAL (
        SELECT next_run_at AS oldest FROM tasks
        WHERE tenant = n.name AND status = 0
        ORDER BY next_run_at LIMIT 1) AS d
    WHERE d.oldest <= now()
      AND NOT n.name = ANY($9::text[])
      AND ($5::text[] IS NULL OR n.name = ANY($5::text[]))
),
shares AS (
    SELECT tenant, max_running,
           base + (row_number() OVER (ORDER BY oldest, tenant) <= $1 - sum(base) OVER ())::int
               AS share
    FROM (SELECT *, floor($1 * weight::numeric / sum(weight) OVER ())::bigint AS base
          FROM active) AS a
),
slots AS MATERIALIZED (
    SELECT r.tenant, r.slot, row_number() OVER (PARTITION BY r.tenant ORDER BY r.slot) AS n
    FROM shares AS s CROSS JOIN LATERAL (
        SELECT r.tenant, r.slot
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
        SELECT id, tenant, next_run_at,
               octet_length(payload) + coalesce(octet_length(state), 0) AS bytes
        FROM tasks
        WHERE tenant = s.tenant AND status = 0 AND next_run_at <= now()
          AND ($3::text[] IS NULL OR task_type = ANY($3::text[]))
          AND ($6::text[] IS NULL
               OR (tenant, task_type) NOT IN (SELECT * FROM unnest($6::text[], $7::text[])))
        ORDER BY next_run_at
        LIMIT CASE WHEN s.max_running IS NULL THEN s.share
                   ELSE (SELECT count(*) FROM slots WHERE slots.tenant = s.tenant) END
        FOR UPDATE SKIP LOCKED) AS d
),
-- The tenants that took their whole share, and may have more: never one with a quota on
-- its runs in flight, whose share was as much as its free slots allowed.
more AS (
    SELECT s.tenant
    FROM shares AS s
    JOIN (SELECT tenant, count(*) AS took FROM first GROUP BY tenant) AS f USING (tenant)
    WHERE f.took = s.share AND s.max_running IS NULL
),
-- Each of them offers the whole rest of the batch; the oldest due of those offered fill
-- it (`due`), and the others are left due. Nothing is read here when the first round
-- filled the batch.
second AS MATERIALIZED (
    SELECT d.* FROM more AS m CROSS JOIN LATERAL (
        SELECT id, tenant, next_run_at,
               octet_length(payload) + coalesce(octet_length(state), 0) AS bytes
        FROM tasks
        WHERE tenant = m.tenant AND status = 0 AND next_run_at <= now()
          AND id NOT IN (SELECT id FROM first)
          AND ($3::text[] IS NULL OR task_type = ANY($3::text[]))
          AND ($6::text[] IS NULL
               OR (tenant, task_type) NOT IN (SELECT * FROM unnest($6::text[], $7::text[])))
        ORDER BY next_run_at
        LIMIT (SELECT $1 - count(*) FROM first)
        FOR UPDATE SKIP LOCKED) AS d
),
due AS (
    SELECT id, bytes FROM first
    UNION ALL
    (SELECT id, bytes FROM second ORDER BY next_run_at LIMIT (SELECT $1 - count(*) FROM first))
),
-- The rows past the batch's budget of $8 bytes of payload and state, in the order they
-- were locked, but never the first: left due (see CLAIM_MAX_BYTES in claim/mod.rs).
-- Computed only where the batch is over its budget, so that a batch of small tasks pays
-- one sum.
over AS (
    SELECT id
    FROM (SELECT id, sum(bytes) OVER (ROWS UNBOUNDED PRECEDING) AS upto,
                 row_number() OVER () AS n
          FROM due
          WHERE (SELECT sum(bytes) FROM due) > $8) AS s
    WHERE upto > $8 AND n > 1
),
-- Each slot taken, marked with the task it is for: a tenant's tasks and its slots paired
-- in order. A task over the byte budget is not leased, so its slot is free at once.
held AS (
    UPDATE run_slots AS r
    SET task_id = p.id, lease_token = $4,
        until = now() + $2::bigint * interval '1 millisecond'
    FROM (SELECT f.id, f.tenant, row_number() OVER (PARTITION BY f.tenant ORDER BY f.id) AS n
          FROM first AS f
          WHERE f.tenant IN (SELECT tenant FROM slots)) AS p
    JOIN slots AS s ON s.tenant = p.tenant AND s.n = p.n
    WHERE r.tenant = s.tenant AND r.slot = s.slot
    RETURNING r.task_id
)
UPDATE tasks AS t
SET next_run_at = now() + $2::bigint * interval '1 millisecond',
    lease_token = $4,
    due_at      = coalesce(t.due_at, t.next_run_at),
    attempt     = t.attempt
                  + CASE WHEN t.lease_token IS NULL THEN 1
                         WHEN recur_host_gone(recur_token_host(t.lease_token)) THEN 1
                         ELSE 0 END,
    updated_at  = now()
-- The rows by their ids as an array: the planner takes it for a few ids and looks each
-- up, where a join with `due` (whose size it cannot know, and guesses from the lateral
-- LIMITs above at a tenth of the table) made it read the whole primary key's index.
WHERE t.id = ANY (ARRAY(SELECT id FROM due WHERE id NOT IN (SELECT id FROM over)))
RETURNING t.id, t.tenant, t.task_type, t.key, t.payload, t.state, t.attempt, t.runs,
          t.due_at AS scheduled_at, t.id IN (SELECT task_id FROM held) AS slot
