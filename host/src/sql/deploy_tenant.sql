-- The deploying tenant $1, with the default limits if it is new.
INSERT INTO tenants (name) VALUES ($1) ON CONFLICT DO NOTHING
