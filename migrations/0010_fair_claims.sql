-- Fair claims: a claim gives each tenant with due work a share of its batch in
-- proportion to the tenant's weight, whatever the tenant's backlog (claim_timed.sql,
-- claim_locked.sql), so one tenant's backlog no longer makes every other tenant wait
-- behind it.

-- A tenant's share of the fleet's executions while several tenants have due work.
ALTER TABLE tenants
    ADD COLUMN weight integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 10000);

-- The claim reads each tenant's queue on its own: due scheduled tasks by tenant, in time
-- order. It replaces the single queue in time order, so a run still enters one index
-- entry for its next due time, not two.
DROP INDEX tasks_due;
CREATE INDEX tasks_due ON tasks (tenant, next_run_at) WHERE status = 0;

-- The claim finds the tenants with due work among the tenants that have a row: every
-- tenant that owns tasks or modules gets one now, under the default limits.
INSERT INTO tenants (name)
SELECT tenant FROM tasks
UNION
SELECT tenant FROM modules
ON CONFLICT DO NOTHING;

-- Tenants are created on purpose, by an operator (`recur tenant create`), not the first
-- time a task or a module names one: every door that writes tasks or modules for a
-- tenant asks recur_require_tenants() first, which refuses a tenant without a row unless
-- the operator allows the doors to create tenants (`recur tenant auto-create on`).
CREATE TABLE settings (
    -- One row: the fleet's settings.
    one                 boolean PRIMARY KEY DEFAULT true CHECK (one),
    -- Whether the doors create a tenant they do not know, under the default limits.
    auto_create_tenants boolean NOT NULL DEFAULT false
);
INSERT INTO settings DEFAULT VALUES;

-- The tenant the command line uses when none is named.
INSERT INTO tenants (name) VALUES ('default') ON CONFLICT DO NOTHING;

-- Raises, with SQLSTATE RT404, for the first of the named tenants without a row, unless
-- the fleet allows auto-creation: then creates them all.
CREATE FUNCTION recur_require_tenants(p_names text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    SELECT n INTO missing
    FROM unnest(p_names) AS n
    WHERE NOT EXISTS (SELECT 1 FROM tenants WHERE name = n)
    LIMIT 1;
    IF missing IS NULL THEN
        RETURN;
    END IF;
    IF (SELECT auto_create_tenants FROM settings) THEN
        INSERT INTO tenants (name) SELECT DISTINCT n FROM unnest(p_names) AS n
        ON CONFLICT DO NOTHING;
        RETURN;
    END IF;
    RAISE EXCEPTION 'tenant "%" does not exist; create it with `recur tenant create %` (or let enqueues and deploys create tenants: `recur tenant auto-create on`)',
        missing, missing
        USING ERRCODE = 'RT404';
END
$$;

-- recur_enqueue(), as before, for existing tenants only.
CREATE OR REPLACE FUNCTION recur_enqueue(
    p_tenant    text,
    p_task_type text,
    p_key       text,
    p_payload   jsonb DEFAULT '{}',
    p_run_at    timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT recur_require_tenants(ARRAY[p_tenant]);
    WITH keyed AS (
        INSERT INTO task_keys (tenant, task_type, key, id)
        VALUES (p_tenant, p_task_type, p_key, nextval('tasks_id_seq'))
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    INSERT INTO tasks (id, tenant, task_type, key, payload, next_run_at)
    SELECT id, p_tenant, p_task_type, p_key,
           convert_to(coalesce(p_payload, '{}'::jsonb)::text, 'UTF8'),
           coalesce(p_run_at, now())
    FROM keyed
    RETURNING id
$$;
