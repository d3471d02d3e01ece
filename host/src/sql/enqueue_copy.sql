-- A batch of a bulk enqueue, straight into tasks: as fast as PostgreSQL loads a table.
-- There is no ON CONFLICT here, so a key that exists, or repeats in the batch, fails the
-- whole COPY with a unique violation, and the batch is sent again by the array insert
-- (enqueue.sql). The rows carry next_run_at resolved (the transaction's now() for tasks
-- without a first run), in COPY's binary format.
COPY tasks (tenant, task_type, key, payload, next_run_at) FROM STDIN (FORMAT binary)
