-- Whether the database has been migrated at all.
SELECT to_regclass('_sqlx_migrations') IS NOT NULL
