-- Which host made each locked claim: the key of the host's liveness lock (see
-- host/src/liveness.rs). A claim that ended without a commit counts as an attempt on its
-- tasks only when that lock is free, that is when its host is gone; a live host's claim
-- that was cut or outlived its lease is repeated without being charged to its tasks.
-- NULL (claims made before this column) counts as a gone host, as all claims did.
ALTER TABLE claims ADD COLUMN host bigint;
