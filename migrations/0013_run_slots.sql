-- A quota on the runs a tenant has in flight across the whole fleet: `max_running`
-- (NULL: none). Hosts keep it through the database, not each in its own memory, so two
-- hosts do not double it: a run in flight holds one of its tenant's slots, a row of
-- `run_slots`, and a claim takes a task of a tenant with a quota only with a free slot
-- (claim_timed.sql, claim_locked.sql).
ALTER TABLE tenants
    ADD COLUMN max_running integer CHECK (max_running BETWEEN 1 AND 100000);

-- A tenant's slots, numbered 1 to its max_running. Which slot is held, and until when:
--   - a locked claim holds a slot by its row lock, until its transaction ends (its batch
--     commits, or its host's connection dies), and writes nothing to it;
--   - a timed lease writes its task's id, its lease token and when the lease runs out,
--     and holds the slot until the task's outcome is committed or the task is given
--     back (both clear the slot, found by the task's id and token), or until the lease
--     runs out: a host that dies holds its slots no longer than its leases.
-- A claim skips the rows other claims have locked, so two claims never take one slot.
CREATE TABLE run_slots (
    tenant      text    NOT NULL REFERENCES tenants (name) ON DELETE CASCADE,
    slot        integer NOT NULL,
    task_id     bigint,
    lease_token uuid,
    until       timestamptz,
    PRIMARY KEY (tenant, slot)
);
CREATE INDEX run_slots_task ON run_slots (task_id) WHERE task_id IS NOT NULL;

-- Keeps a tenant's slots numbered 1 to its max_running, whichever door changes it.
CREATE FUNCTION recur_sync_run_slots() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM run_slots
    WHERE tenant = NEW.name AND (NEW.max_running IS NULL OR slot > NEW.max_running);
    INSERT INTO run_slots (tenant, slot)
    SELECT NEW.name, s FROM generate_series(1, coalesce(NEW.max_running, 0)) AS s
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_slots_sync
    AFTER INSERT OR UPDATE OF max_running ON tenants
    FOR EACH ROW EXECUTE FUNCTION recur_sync_run_slots();

-- A tenant's role reads its own slots (what it has in flight), and changes none.
ALTER TABLE run_slots ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recur_tenant') THEN
        CREATE POLICY own_slots ON run_slots FOR SELECT TO recur_tenant
            USING (tenant = (SELECT recur_role_tenant()));
        GRANT SELECT ON run_slots TO recur_tenant;
    END IF;
END
$$;
