-- $1 task ids, drawn from the sequence in one round trip.
SELECT ARRAY(SELECT nextval('tasks_id_seq') FROM generate_series(1, $1))
