-- Record checksum $3 for migration $1, reworded after it shipped, where the database
-- holds $2, the checksum (in hex) of its text as it shipped.
UPDATE _sqlx_migrations SET checksum = $3 WHERE version = $1 AND checksum = decode($2, 'hex')
