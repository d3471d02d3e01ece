-- Write back the outcomes of many executions of timed leases, and the tasks they
-- spawned, in one statement. Each row applies only while the task still holds the lease
-- token it was run under: a host whose lease ran out cannot overwrite the newer result
-- of the host that took over. Spawns are written only for outcomes that applied, into
-- the spawning task's tenant, and a key that exists already (in task_keys, see
-- migrations/0005) is absorbed. This is commit_locked.sql but for how it finds rows: the
-- row versions, the claims row and $19 below serve locked claims, and are NULL, NULL and
-- false here.
--
-- Outcomes, one array element each:
--   $1 id, $2 lease token, $3 status, $4 next run as an absolute time in ms since the
--   epoch (or NULL), $5 next run as a delay in ms from now (used when $4 is NULL),
--   $6 whether to replace the state, $7 the new state, $8 attempt, $9 runs to add,
--   $10 last_error, $17 the row version a locked claim saw (NULL for a timed lease),
--   $20 where that version lies, its ctid (NULL for a timed lease).
-- Spawns: $11 parent id, $12 task type, $13 key, $14 payload, $15 absolute ms, $16 delay ms.
-- $18 the key of the locked claim whose claims row goes with this commit (or NULL).
-- $21 the ids of the tasks that hold a run slot (see `freed`).
-- $19 true when a locked claim's outcomes are written after its locks were lost: then
-- the row versions are checked, and rows another transaction has locked are skipped (a
-- row locked now is being run by the host that claimed it since, whose result will
-- stand; waiting for it would hold up every other outcome of this host). While the
-- claim's transaction lives, its row locks are the fence and versions need no check.
WITH outcome AS (
    -- The arrays side by side, unnested in the select list: there they run in step, a
    -- value at a time, where `FROM unnest(a, b, ...)` first copies each array into a
    -- tuplestore of its own. (Both pad a shorter array with NULLs.)
    SELECT unnest($1::bigint[]) AS id, unnest($2::uuid[]) AS token,
           unnest($3::smallint[]) AS status, unnest($4::bigint[]) AS at_ms,
           unnest($5::bigint[]) AS delay_ms, unnest($6::boolean[]) AS set_state,
           unnest($7::bytea[]) AS state, unnest($8::integer[]) AS attempt,
           unnest($9::integer[]) AS runs_inc, unnest($10::text[]) AS error,
           unnest($17::bigint[]) AS version, unnest($20::tid[]) AS row_at
),
freed AS (
    -- The run slots this commit's timed leases held (claim_timed.sql), $21 the ids of
    -- the tasks that hold one: freed whether or not the outcome applied, but only while
    -- the slot still bears the task's lease token.
    UPDATE run_slots AS r
    SET task_id = NULL, lease_token = NULL, until = NULL
    FROM outcome AS o
    WHERE cardinality($21::bigint[]) > 0 AND o.id = ANY($21::bigint[])
      AND r.task_id = o.id AND r.lease_token = o.token
),
released AS (
    -- SKIP LOCKED: after the claim's locks were lost, another host's claim may have
    -- taken the row over (claim_locked.sql); it is that claim's to settle, not worth a wait.
    DELETE FROM claims
    WHERE key = (SELECT key FROM claims WHERE key = $18::bigint FOR UPDATE SKIP LOCKED)
),
unlocked AS (
    SELECT id FROM tasks
    WHERE $19::boolean AND id = ANY($1::bigint[])
    FOR UPDATE SKIP LOCKED
),
committed AS (
    UPDATE tasks AS t
    SET status      = o.status,
        -- Milliseconds to a time by interval arithmetic, which is exact and needs no
        -- numeric division, as `to_timestamp(ms / 1000.0)` would.
        next_run_at = CASE WHEN o.at_ms IS NOT NULL
                           THEN timestamptz 'epoch' + o.at_ms * interval '1 millisecond'
                           ELSE now() + o.delay_ms * interval '1 millisecond' END,
        state       = CASE WHEN o.set_state THEN o.state ELSE t.state END,
        attempt     = o.attempt,
        runs        = t.runs + o.runs_inc,
        last_error  = o.error,
        lease_token = NULL,
        due_at      = NULL,
        updated_at  = now()
    FROM outcome AS o
    -- A timed lease's row may be written by others while it runs (lost.sql), which
    -- moves it, so it is found by id. (commit_locked.sql finds a locked claim's rows
    -- where they lie; the two statements differ only here.)
    WHERE t.id = o.id
      AND t.lease_token IS NOT DISTINCT FROM o.token
      AND (NOT $19::boolean
           OR ((o.version IS NULL OR t.xmin::text::bigint = o.version)
               AND t.id IN (SELECT id FROM unlocked)))
    RETURNING t.id, t.tenant
),
spawn AS MATERIALIZED (
    -- Each spawn draws its task id, which its key takes in task_keys (migrations/0005).
    SELECT nextval('tasks_id_seq') AS id, c.tenant, s.task_type, s.key, s.payload,
           CASE WHEN s.at_ms IS NOT NULL
                THEN timestamptz 'epoch' + s.at_ms * interval '1 millisecond'
                ELSE now() + s.delay_ms * interval '1 millisecond' END AS next_run_at
    FROM unnest($11::bigint[], $12::text[], $13::text[], $14::bytea[], $15::bigint[],
                $16::bigint[]) AS s(parent, task_type, key, payload, at_ms, delay_ms)
    JOIN committed AS c ON c.id = s.parent
    -- A key that exists already is dropped here, before it draws an id and goes through
    -- the insert, by a probe of its index alone: a key is written once, so once a vacuum
    -- has seen its page (hosts see to it, maintain.rs) the probe reads no row, where the
    -- insert's conflict check below reads the key's row too. A key that is new costs a
    -- second probe for it.
    -- A key this snapshot cannot see yet (another commit's, in flight) still meets the
    -- conflict check.
    WHERE NOT EXISTS (SELECT FROM task_keys AS k
                      WHERE k.tenant = c.tenant AND k.task_type = s.task_type AND k.key = s.key)
),
keyed AS (
    -- In key order: two commits that spawn the same keys, each waiting for the other's
    -- uncommitted key, would deadlock if they inserted them in different orders.
    INSERT INTO task_keys (tenant, task_type, key, id)
    SELECT tenant, task_type, key, id FROM spawn
    ORDER BY tenant COLLATE "C", task_type COLLATE "C", key COLLATE "C", id
    ON CONFLICT DO NOTHING
    RETURNING id
),
spawned AS (
    INSERT INTO tasks (id, tenant, task_type, key, payload, next_run_at)
    SELECT s.id, s.tenant, s.task_type, s.key, s.payload, s.next_run_at
    FROM spawn AS s
    -- A hashed lookup of the ids that won their keys, kept one by `IS TRUE`: a bare IN
    -- (or a join) lets the planner, which cannot know how many rows a CTE holds and
    -- guesses one, compare every spawn with every key.
    WHERE (s.id IN (SELECT id FROM keyed)) IS TRUE
    RETURNING 1
)
SELECT (SELECT count(*) FROM committed) AS committed,
       (SELECT count(*) FROM spawned)   AS spawned
