-- The tasks of a bulk enqueue's batch, straight into tasks: as fast as PostgreSQL loads
-- a table. Sent after the batch's keys went into task_keys (enqueue_copy_keys.sql), so
-- every task here is new, under the id its key took. The rows carry next_run_at resolved
-- (the transaction's now() for tasks without a first run), in COPY's binary format.
COPY tasks (id, tenant, task_type, key, payload, next_run_at) FROM STDIN (FORMAT binary)
