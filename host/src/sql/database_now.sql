-- The database's clock, which due times are compared with.
SELECT now()
