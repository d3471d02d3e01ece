-- Which host made each locked claim: the key of the host's liveness lock (see
-- host/src/liveness.rs). A claim that ended without a commit counts as an attempt on its
-- tasks only when that lock is free, that is when its host is gone; a live host's claim
-- that was cut or outlived its lease is repeated without being charged to its tasks.
-- NULL (claims made before this column) counts as a gone host, as all claims did.
ALTER TABLE claims ADD COLUMN host bigint;

-- Whether the host with this liveness key is gone: nobody holds its lock (NULL, an
-- unknown host, counts as gone). A shared lock conflicts only with the live host's
-- exclusive one, so any number of claims can ask at once; one that gets it keeps it to
-- the end of its transaction, which is harmless, since a gone host's key is never taken
-- again. Asked only of claims and leases that ended without a commit.
CREATE FUNCTION recur_host_gone(host bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT host IS NULL OR pg_try_advisory_xact_lock_shared(host)
$$;

-- The host that took a timed lease: its key is the lease token's first eight bytes.
CREATE FUNCTION recur_token_host(token uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT ('x' || translate(left(token::text, 18), '-', ''))::bit(64)::bigint
$$;
