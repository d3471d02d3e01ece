-- A task's payload and state, bounded in the table as every door bounds them (an
-- enqueue's payload, a spawn's payload, a run's state): a row written past the doors, by
-- hand, is refused too. A host claims the first task of a batch whatever its size, so a
-- task too large to return in one PostgreSQL value would otherwise fail every claim
-- that reached it.
--
-- NOT VALID: the rows already there were written through the doors, and checking them
-- would read the whole table under a lock; new rows and every update are checked.
ALTER TABLE tasks
    ADD CONSTRAINT tasks_payload_size CHECK (octet_length(payload) <= 1048576) NOT VALID,
    ADD CONSTRAINT tasks_state_size CHECK (octet_length(state) <= 262144) NOT VALID;
