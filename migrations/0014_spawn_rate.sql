-- A quota on the tasks a tenant's runs spawn per minute, across the whole fleet:
-- `max_spawns_per_minute` (NULL: none). Before a host commits outcomes that spawn for
-- such a tenant, it draws their spawns from the tenant's budget for the current minute,
-- by the database's clock (commit/rate.rs, spawn_rate.sql); an outcome whose spawns the
-- budget no longer holds is not written, and its task is retried in the next minute,
-- with the quota named in its error.
ALTER TABLE tenants
    ADD COLUMN max_spawns_per_minute integer CHECK (max_spawns_per_minute >= 0);

-- What each tenant with the quota has drawn in a minute. A host's draw deletes the
-- tenant's earlier minutes as it goes.
CREATE TABLE spawn_minutes (
    tenant  text        NOT NULL REFERENCES tenants (name) ON DELETE CASCADE,
    minute  timestamptz NOT NULL,
    -- The spawns drawn in this minute.
    spawned bigint      NOT NULL,
    -- What the last draw asked for, and what it was granted.
    wanted  bigint      NOT NULL,
    granted bigint      NOT NULL,
    PRIMARY KEY (tenant, minute)
);

-- A tenant's role reads its own budget, and changes none.
ALTER TABLE spawn_minutes ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recur_tenant') THEN
        CREATE POLICY own_minutes ON spawn_minutes FOR SELECT TO recur_tenant
            USING (tenant = (SELECT recur_role_tenant()));
        GRANT SELECT ON spawn_minutes TO recur_tenant;
    END IF;
END
$$;
