-- A locked claim inserts one claims row holding its batch's task ids: 8 KB for a batch
-- of 1,000, past the 2 KB at which PostgreSQL compresses a value and moves it out of
-- line. Every locked claim pays for that compression, and lz4 compresses far faster
-- than the default pglz. Kept out of line either way, so the claim's scan of `claims`
-- for lost batches reads small rows rather than 8 KB ones.
--
-- Only where the server was built with lz4: elsewhere the column keeps pglz, which
-- works the same, only slower. (A server without the setting, before PostgreSQL 14,
-- has neither.)
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE claims ALTER COLUMN task_ids SET COMPRESSION lz4;
    END IF;
END
$$;
