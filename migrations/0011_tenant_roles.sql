-- PostgreSQL itself enforces who may do what. The role that runs the migrations owns
-- every table: it is the operator's, and hosts run as it (or as a role with BYPASSRLS),
-- seeing every tenant's rows. Each tenant may have a login role of its own
-- (`recur tenant create acme --login`), a member of the group role `recur_tenant`,
-- named in `tenants.role`. Such a role sees and changes only its own tenant's tasks,
-- keys and modules, through row-level security on each table it can reach, reads only
-- its own tenant's row, and cannot change any tenant's limits or weight.

-- The group role is the cluster's, shared by every recur database on it; what it may
-- do is granted per database below, and the policies limit a member to the tenant
-- whose row names it in this database. Creating it needs CREATEROLE: a migrating role
-- without it leaves tenants without login roles, and `recur tenant create --login`
-- says so.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recur_tenant') THEN
        CREATE ROLE recur_tenant NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'recur_tenant was not created (the migrating role lacks CREATEROLE); tenants get no login roles';
END
$$;

-- The login role that acts for the tenant, if it has one.
ALTER TABLE tenants ADD COLUMN role name UNIQUE;

-- The tenant the current role acts for: NULL for the operator and any other role that
-- no tenant names.
CREATE FUNCTION recur_role_tenant() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT name FROM tenants WHERE role = current_user
$$;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE modules ENABLE ROW LEVEL SECURITY;
ALTER TABLE settings ENABLE ROW LEVEL SECURITY;

-- A policy for each table, for the group only: the owner is exempt from them all, and a
-- role that is neither has no privileges to begin with. The tenant is looked up once
-- per statement (a subquery), not once per row.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recur_tenant') THEN
        RETURN;
    END IF;
    CREATE POLICY own_row ON tenants FOR SELECT TO recur_tenant
        USING (role = current_user);
    CREATE POLICY own_tasks ON tasks FOR ALL TO recur_tenant
        USING (tenant = (SELECT recur_role_tenant()))
        WITH CHECK (tenant = (SELECT recur_role_tenant()));
    CREATE POLICY own_keys ON task_keys FOR ALL TO recur_tenant
        USING (tenant = (SELECT recur_role_tenant()))
        WITH CHECK (tenant = (SELECT recur_role_tenant()));
    CREATE POLICY own_modules ON modules FOR ALL TO recur_tenant
        USING (tenant = (SELECT recur_role_tenant()))
        WITH CHECK (tenant = (SELECT recur_role_tenant()));
    CREATE POLICY read_settings ON settings FOR SELECT TO recur_tenant USING (true);

    -- Reading: its own rows, the settings, and the schema's version (every command
    -- checks it).
    GRANT SELECT ON tenants, tasks, task_keys, modules, settings, _sqlx_migrations
        TO recur_tenant;
    -- Enqueueing: a task's identity, payload and first run, and its key; the id from
    -- the tasks' sequence. Never its status, attempts, runs or lease.
    GRANT INSERT (id, tenant, task_type, key, payload, next_run_at) ON tasks TO recur_tenant;
    GRANT INSERT ON task_keys TO recur_tenant;
    GRANT USAGE ON SEQUENCE tasks_id_seq TO recur_tenant;
    -- Requeueing its failed tasks, and deleting tasks (which frees their keys).
    GRANT UPDATE (status, attempt, next_run_at, lease_token, due_at, last_error, updated_at)
        ON tasks TO recur_tenant;
    GRANT DELETE ON tasks, task_keys TO recur_tenant;
    -- Deploying: a new version, and the old one made inactive.
    GRANT INSERT (tenant, task_type, version, sha256, component, reuse_instance)
        ON modules TO recur_tenant;
    GRANT UPDATE (active) ON modules TO recur_tenant;
END
$$;

-- Refuses a tenant's role any of the named tenants but its own, with SQLSTATE 42501
-- (insufficient_privilege) and a message that says so: a door that changes a tenant's
-- rows asks this first, where row-level security alone would only find no rows, or
-- refuse a row with a message about a policy.
CREATE FUNCTION recur_require_own(p_names text[]) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    mine  text := recur_role_tenant();
    other text;
BEGIN
    IF mine IS NULL THEN
        RETURN;
    END IF;
    SELECT n INTO other FROM unnest(p_names) AS n WHERE n <> mine LIMIT 1;
    IF other IS NOT NULL THEN
        RAISE EXCEPTION 'role "%" acts for tenant "%" and cannot act for tenant "%"; connect as that tenant''s role or as the operator',
            current_user, mine, other
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- The check every door that writes makes (migrations/0010), now refusing a tenant's
-- role any tenant but its own first.
CREATE OR REPLACE FUNCTION recur_require_tenants(p_names text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    PERFORM recur_require_own(p_names);
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
