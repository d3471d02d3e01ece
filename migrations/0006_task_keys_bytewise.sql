-- Keys compare byte by byte. task_keys is written by every task created, and its unique
-- index orders (tenant, task_type, key) by the database's collation: under any locale
-- but "C", each comparison there copies both strings into terminated buffers and asks
-- the C library to collate them. Nothing orders keys for people to read, and equality
-- under any deterministic collation (as a database's default must be) is byte equality
-- anyway, so the keys that collide are the same ones, and "C" compares them with no
-- copies and no call into the C library.
--
-- Comparisons between these columns and text of the default collation (tasks' own
-- copies of the key, parameters) take "C": a non-default implicit collation wins over
-- the default, so every query keeps using the index. The index is rebuilt; the table is
-- not rewritten.
ALTER TABLE task_keys
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN task_type TYPE text COLLATE "C",
    ALTER COLUMN key TYPE text COLLATE "C";
