-- Spawns count against a tenant's max_tasks (migrations/0012), as enqueues do. Counting
-- a tenant's scheduled tasks at every commit that spawns for it would hold up the other
-- tenants' outcomes in that commit for a time that grows with the quota, so hosts count
-- it every few seconds instead, off the commit's path (room.rs), and keep here the
-- room it left; a commit draws its spawns from that room (spawn_budget.sql), as from the
-- spawn budget of the minute. Enqueues still count exactly at the doors, so the room is
-- passed only by the spawns a count has not seen yet: those of the last few seconds.
CREATE TABLE task_room (
    tenant     text        PRIMARY KEY REFERENCES tenants (name) ON DELETE CASCADE,
    -- Tasks the tenant may still get: its max_tasks less its scheduled tasks when last
    -- counted, less the spawns drawn since.
    room       bigint      NOT NULL,
    -- What the last draw was granted.
    granted    bigint      NOT NULL DEFAULT 0,
    counted_at timestamptz NOT NULL
);

-- A tenant's role reads its own room, and changes none.
ALTER TABLE task_room ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recur_tenant') THEN
        CREATE POLICY own_room ON task_room FOR SELECT TO recur_tenant
            USING (tenant = (SELECT recur_role_tenant()));
        GRANT SELECT ON task_room TO recur_tenant;
    END IF;
END
$$;
