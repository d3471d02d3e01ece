-- What a host that dies in the middle of a run used to erase: when the task was due, and
-- that the run was tried at all. Both are needed to tell a re-run from an on-time run,
-- and to stop a task whose runs keep taking their host down.

-- The due time a timed lease displaced from next_run_at (the lease moves next_run_at out
-- by the lease timeout). A task re-leased after its lease ran out keeps the first value,
-- so its next run is told when it was really due. NULL while the task is not leased;
-- every commit and give-back clears it.
ALTER TABLE tasks ADD COLUMN due_at timestamptz;

-- One row per batch claimed under row locks. A locked claim writes nothing to the tasks
-- it holds, so if its host dies, or its connection is cut, the tasks would carry no trace
-- of the attempt. The row is inserted outside the claim's transaction and deleted inside
-- it when the batch commits; the claim's transaction also holds the advisory lock `key`.
-- A row whose advisory lock nobody holds is a batch whose runs never committed: any host
-- deletes it and counts an attempt on each of its tasks, so max_attempts bounds them.
-- Unlogged: these rows matter only while their hosts' sessions live, which a database
-- crash ends anyway.
CREATE UNLOGGED TABLE claims (
    key        bigint      PRIMARY KEY,
    task_ids   bigint[]    NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
