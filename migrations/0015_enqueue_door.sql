-- A tenant's role enqueues only through a narrow door: SECURITY DEFINER functions that
-- check what the role asks for and then write as their owner. Plain INSERTs into
-- tasks and task_keys are no longer granted to tenants' roles: through them a tenant
-- could pass its quotas (max_payload_bytes, max_tasks) or choose task ids that another
-- tenant's enqueues would later collide with. The doors are recur_enqueue() and
-- recur_enqueue_many(); the library and the command line use the second for a tenant's
-- role (enqueue/mod.rs). Requeueing, deleting and deploying stay plain statements
-- under row-level security (migrations/0011): they cannot reach past the tenant's rows
-- or its quotas.

-- The tenant the session acts for, by the role that logged in (session_user): inside a
-- SECURITY DEFINER function current_user is the function's owner. NULL for the
-- operator. A member of recur_tenant that no tenant names is refused, not taken for
-- the operator.
CREATE FUNCTION recur_session_tenant() RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    mine text;
BEGIN
    SELECT name INTO mine FROM tenants WHERE role = session_user;
    IF mine IS NULL AND EXISTS (
        SELECT 1 FROM pg_auth_members AS m
        JOIN pg_roles AS g ON g.oid = m.roleid
        JOIN pg_roles AS u ON u.oid = m.member
        WHERE g.rolname = 'recur_tenant' AND u.rolname = session_user)
    THEN
        RAISE EXCEPTION 'role "%" is a tenant''s role, but no tenant names it; ask the operator to create the tenant with this role',
            session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN mine;
END
$$;

-- Refuses, as recur_require_own() does, any of the named tenants but the session's own
-- when the session acts for a tenant: the check a door that runs as its owner makes.
CREATE FUNCTION recur_require_caller(p_names text[]) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    mine  text := recur_session_tenant();
    other text;
BEGIN
    IF mine IS NULL THEN
        RETURN;
    END IF;
    SELECT n INTO other FROM unnest(p_names) AS n WHERE n IS DISTINCT FROM mine LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'role "%" acts for tenant "%" and cannot act for tenant "%"; connect as that tenant''s role or as the operator',
            session_user, mine, other
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- Enqueues many tasks at once, given as arrays side by side (payloads, first runs and
-- ids may be NULL, or hold NULLs: empty, now, drawn here); returns how many were new.
-- Each tenant must exist (or be created, recur_require_tenants()), each payload must
-- fit its tenant's max_payload_bytes, and the tenants' max_tasks must hold once the
-- tasks are in, or nothing is enqueued. A key that exists, in the table or earlier in
-- the arrays, leaves the existing task alone. A tenant's role may enqueue for its own
-- tenant only, and its tasks always draw their ids here.
--   SELECT recur_enqueue_many(ARRAY['acme', 'acme'], ARRAY['crawler', 'crawler'],
--                             ARRAY['https://a.example/', 'https://b.example/']);
CREATE FUNCTION recur_enqueue_many(
    p_tenants    text[],
    p_task_types text[],
    p_keys       text[],
    p_payloads   bytea[] DEFAULT NULL,
    p_run_at     timestamptz[] DEFAULT NULL,
    p_ids        bigint[] DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    names  text[] := ARRAY(SELECT DISTINCT n FROM unnest(p_tenants) AS n ORDER BY n);
    len    integer := coalesce(cardinality(p_tenants), 0);
    caller text := recur_session_tenant();
    big    record;
    added  bigint;
BEGIN
    IF coalesce(cardinality(p_task_types), 0) <> len OR coalesce(cardinality(p_keys), 0) <> len
       OR coalesce(cardinality(p_payloads), len) <> len
       OR coalesce(cardinality(p_run_at), len) <> len
       OR coalesce(cardinality(p_ids), len) <> len THEN
        RAISE EXCEPTION 'recur_enqueue_many takes arrays of one length, one element per task; got % tenants, % task types, % keys, % payloads, % first runs and % ids',
            len, cardinality(p_task_types), cardinality(p_keys), cardinality(p_payloads),
            cardinality(p_run_at), cardinality(p_ids)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM recur_require_caller(names);
    PERFORM recur_require_tenants(names);
    SELECT a.i, a.tenant, octet_length(a.payload) AS bytes, t.max_payload_bytes AS quota
    INTO big
    FROM unnest(p_tenants, p_payloads) WITH ORDINALITY AS a (tenant, payload, i)
    JOIN tenants AS t ON t.name = a.tenant
    WHERE octet_length(a.payload) > t.max_payload_bytes
    ORDER BY a.i LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'task % has a payload of % bytes; tenant "%" may enqueue at most % (its max_payload_bytes), so nothing was enqueued',
            big.i, big.bytes, big.tenant, big.quota
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    -- As host/src/sql/enqueue.sql writes tasks, which says why in this order.
    WITH new AS MATERIALIZED (
        SELECT coalesce(CASE WHEN caller IS NULL THEN a.id END, nextval('tasks_id_seq')) AS id,
               a.tenant, a.task_type, a.key, coalesce(a.payload, '') AS payload, a.run_at
        FROM unnest(p_tenants, p_task_types, p_keys, p_payloads, p_run_at, p_ids)
             AS a (tenant, task_type, key, payload, run_at, id)
    ),
    keyed AS (
        INSERT INTO task_keys (tenant, task_type, key, id)
        SELECT k.tenant, k.task_type, k.key, k.id FROM new AS k
        ORDER BY k.tenant COLLATE "C", k.task_type COLLATE "C", k.key COLLATE "C", k.id
        ON CONFLICT DO NOTHING
        RETURNING task_keys.id
    )
    INSERT INTO tasks (id, tenant, task_type, key, payload, next_run_at)
    SELECT w.id, w.tenant, w.task_type, w.key, w.payload, coalesce(w.run_at, now())
    FROM new AS w
    JOIN keyed AS k ON k.id = w.id;
    GET DIAGNOSTICS added = ROW_COUNT;
    PERFORM recur_check_task_quotas(names);
    RETURN added;
END
$$;

-- recur_enqueue(), as before (migrations/0012), now a door that runs as its owner: one
-- task through recur_enqueue_many(), which makes every check. Returns the new task's id,
-- or NULL when its key exists.
CREATE OR REPLACE FUNCTION recur_enqueue(
    p_tenant    text,
    p_task_type text,
    p_key       text,
    p_payload   jsonb DEFAULT '{}',
    p_run_at    timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF recur_enqueue_many(
           ARRAY[p_tenant], ARRAY[p_task_type], ARRAY[p_key],
           ARRAY[convert_to(coalesce(p_payload, '{}'::jsonb)::text, 'UTF8')],
           ARRAY[p_run_at]) = 0 THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT id FROM task_keys
            WHERE tenant = p_tenant AND task_type = p_task_type AND key = p_key);
END
$$;

-- Only the owner, and tenants' roles, may call the doors: any other role would act as
-- their owner.
REVOKE EXECUTE ON FUNCTION recur_enqueue(text, text, text, jsonb, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION recur_enqueue_many(text[], text[], text[], bytea[], timestamptz[], bigint[])
    FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recur_tenant') THEN
        GRANT EXECUTE ON FUNCTION recur_enqueue(text, text, text, jsonb, timestamptz)
            TO recur_tenant;
        GRANT EXECUTE ON FUNCTION
            recur_enqueue_many(text[], text[], text[], bytea[], timestamptz[], bigint[])
            TO recur_tenant;
        REVOKE INSERT ON tasks, task_keys FROM recur_tenant;
        REVOKE INSERT (id, tenant, task_type, key, payload, next_run_at) ON tasks
            FROM recur_tenant;
    END IF;
END
$$;
