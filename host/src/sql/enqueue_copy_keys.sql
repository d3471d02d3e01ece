-- The keys of a bulk enqueue's batch, with the ids drawn for their tasks, straight into
-- task_keys. There is no ON CONFLICT here, so a key that exists, or repeats in the
-- batch, fails the whole COPY with a unique violation, and the batch is sent again by
-- the array insert (enqueue.sql), which absorbs it. In COPY's binary format.
COPY task_keys (tenant, task_type, key, id) FROM STDIN (FORMAT binary)
