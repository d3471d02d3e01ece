-- The hosts that run: each keeps a row of its own here, written when it starts and
-- every 2 s after (roster.rs), and deleted when it stops. A host is live while it holds
-- its liveness lock (liveness.rs; recur_host_gone() says it is free), whatever its row
-- says: the row of a host that died stays until another host's heartbeat deletes it, and
-- `recur hosts` lists only live hosts. Unlogged: the rows are rewritten every few
-- seconds, and after a crash of the server every host writes its row again.
CREATE UNLOGGED TABLE hosts (
    -- The host's liveness key.
    id            bigint      PRIMARY KEY,
    -- The recur version it runs, the machine and the process.
    version       text        NOT NULL,
    hostname      text        NOT NULL,
    pid           integer     NOT NULL,
    -- How it claims, its workers and the most tasks it holds at once.
    claim_mode    text        NOT NULL,
    workers       integer     NOT NULL,
    max_in_flight integer     NOT NULL,
    -- Tasks it has claimed and not yet committed or given back, at its last heartbeat.
    in_flight     integer     NOT NULL,
    started_at    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL
);
