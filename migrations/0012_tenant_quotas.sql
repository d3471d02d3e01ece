-- Quotas per tenant, within the contract's limits (contract.rs), which are their
-- defaults: the largest payload a door accepts for the tenant's tasks (enqueue,
-- recur_enqueue), the largest state a run may keep, the most tasks one run may spawn,
-- and the most scheduled tasks it may have (none by default). Going over one fails that
-- enqueue or that run only.
ALTER TABLE tenants
    ADD COLUMN max_payload_bytes integer NOT NULL DEFAULT 1048576
        CHECK (max_payload_bytes BETWEEN 0 AND 1048576),
    ADD COLUMN max_state_bytes integer NOT NULL DEFAULT 262144
        CHECK (max_state_bytes BETWEEN 0 AND 262144),
    ADD COLUMN max_spawns integer NOT NULL DEFAULT 1000
        CHECK (max_spawns BETWEEN 0 AND 1000),
    ADD COLUMN max_tasks bigint CHECK (max_tasks >= 0);

-- Raises, with SQLSTATE RT413, for the first of the named tenants whose scheduled tasks,
-- plus the number beside it in p_adding (NULL: none), pass its max_tasks. A transaction
-- that wrote tasks calls it after writing and before committing, adding nothing: its
-- own tasks are counted. Each tenant with a quota is counted under a transaction lock of
-- its own, so two such enqueues for it count one after the other and cannot both pass
-- with the other's tasks unseen. A bulk load, whose tasks are in transactions of their
-- own, calls it from outside them, adding the tasks it read (see enqueue/mod.rs). A
-- count stops one past the quota.
CREATE FUNCTION recur_check_task_quotas(p_names text[], p_adding bigint[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n bigint;
BEGIN
    FOR t IN SELECT q.name, q.max_tasks, coalesce(a.adding, 0) AS adding
             FROM tenants AS q
             JOIN unnest(p_names, p_adding) AS a (name, adding) ON a.name = q.name
             WHERE q.max_tasks IS NOT NULL ORDER BY q.name LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('recur max_tasks/' || t.name, 0));
        SELECT count(*) + t.adding INTO n FROM (
            SELECT 1 FROM tasks WHERE tenant = t.name AND status = 0
            LIMIT greatest(t.max_tasks + 1 - t.adding, 0)
        ) AS s;
        IF n > t.max_tasks THEN
            RAISE EXCEPTION 'tenant "%" may have at most % scheduled tasks (its max_tasks); this enqueue would pass it, so nothing was enqueued',
                t.name, t.max_tasks
                USING ERRCODE = 'RT413';
        END IF;
    END LOOP;
END
$$;

-- recur_enqueue(), as before, refusing a payload over its tenant's quota.
CREATE OR REPLACE FUNCTION recur_enqueue(
    p_tenant    text,
    p_task_type text,
    p_key       text,
    p_payload   jsonb DEFAULT '{}',
    p_run_at    timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    payload bytea := convert_to(coalesce(p_payload, '{}'::jsonb)::text, 'UTF8');
    quota   integer;
    id      bigint;
BEGIN
    PERFORM recur_require_tenants(ARRAY[p_tenant]);
    SELECT max_payload_bytes INTO quota FROM tenants WHERE name = p_tenant;
    IF octet_length(payload) > quota THEN
        RAISE EXCEPTION 'the payload is % bytes; tenant "%" may enqueue at most % (its max_payload_bytes)',
            octet_length(payload), p_tenant, quota
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    WITH keyed AS (
        INSERT INTO task_keys (tenant, task_type, key, id)
        VALUES (p_tenant, p_task_type, p_key, nextval('tasks_id_seq'))
        ON CONFLICT DO NOTHING
        RETURNING task_keys.id
    )
    INSERT INTO tasks (id, tenant, task_type, key, payload, next_run_at)
    SELECT k.id, p_tenant, p_task_type, p_key, payload, coalesce(p_run_at, now())
    FROM keyed AS k
    RETURNING tasks.id INTO id;
    PERFORM recur_check_task_quotas(ARRAY[p_tenant]);
    RETURN id;
END
$$;
