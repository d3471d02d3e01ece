-- Quotas per tenant, within the contract's limits (contract.rs), which are their
-- defaults: the largest payload a door accepts for the tenant's tasks (enqueue,
-- recur_enqueue, a spawn), the largest state a run may keep, and the most tasks one run
-- may spawn. Going over one fails that enqueue or that run only.
ALTER TABLE tenants
    ADD COLUMN max_payload_bytes integer NOT NULL DEFAULT 1048576
        CHECK (max_payload_bytes BETWEEN 0 AND 1048576),
    ADD COLUMN max_state_bytes integer NOT NULL DEFAULT 262144
        CHECK (max_state_bytes BETWEEN 0 AND 262144),
    ADD COLUMN max_spawns integer NOT NULL DEFAULT 1000
        CHECK (max_spawns BETWEEN 0 AND 1000);

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
    RETURN id;
END
$$;
