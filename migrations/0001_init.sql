-- recur's schema: tenants, deployed modules and the tasks table the hosts lease from.
-- Status codes are shared with host/src/task.rs: 0 scheduled, 1 done, 2 failed.

-- A tenant owns tasks and modules, and sets the limits its modules run under.
-- A tenant without a row runs under the defaults below.
CREATE TABLE tenants (
    name         text PRIMARY KEY CHECK (name <> '' AND octet_length(name) <= 200),
    -- Largest linear memory one execution may grow to.
    memory_bytes bigint  NOT NULL DEFAULT 67108864 CHECK (memory_bytes BETWEEN 65536 AND 4294967296),
    -- Wall-clock budget of one execution, enforced by epoch interruption.
    timeout_ms   integer NOT NULL DEFAULT 5000 CHECK (timeout_ms BETWEEN 1 AND 3600000),
    -- Tries of one run (retries and sandbox faults) before the task is parked as failed.
    max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 1000),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Every deployed version of every module; one version per (tenant, task_type) is active.
CREATE TABLE modules (
    tenant     text    NOT NULL,
    task_type  text    NOT NULL,
    version    integer NOT NULL CHECK (version > 0),
    sha256     text    NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    component  bytea   NOT NULL,
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, task_type, version)
);
CREATE UNIQUE INDEX modules_active ON modules (tenant, task_type) WHERE active;

-- One row per recurring subject (a URL to revisit, an account to bill), unique by key.
CREATE TABLE tasks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant      text     NOT NULL CHECK (tenant <> '' AND octet_length(tenant) <= 200),
    task_type   text     NOT NULL CHECK (task_type <> '' AND octet_length(task_type) <= 200),
    key         text     NOT NULL CHECK (key <> '' AND octet_length(key) <= 2048),
    payload     bytea    NOT NULL DEFAULT '',
    -- What the module returned last time; NULL before its first run.
    state       bytea,
    status      smallint NOT NULL DEFAULT 0 CHECK (status IN (0, 1, 2)),
    -- When the task is due. A lease pushes it out by the lease timeout, so a task whose
    -- host died is due again when its lease runs out.
    next_run_at timestamptz NOT NULL DEFAULT now(),
    -- Set by each lease, cleared by its commit; a commit applies only while it matches.
    lease_token uuid,
    -- Tries of the current run: raised by each lease, reset to 0 by a successful run.
    attempt     integer  NOT NULL DEFAULT 0,
    -- Successful runs.
    runs        bigint   NOT NULL DEFAULT 0,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tasks_unique_key UNIQUE (tenant, task_type, key)
);

-- The lease's path: due scheduled tasks in time order. Done and failed tasks stay out of it.
CREATE INDEX tasks_due ON tasks (next_run_at) WHERE status = 0;

-- Enqueue from any language with plain SQL. Returns the new task's id, or NULL when a
-- task with this key exists already (the existing task is left unchanged).
--   SELECT recur_enqueue('acme', 'crawler', 'https://example.com/', '{"fanout": 3}');
CREATE FUNCTION recur_enqueue(
    p_tenant    text,
    p_task_type text,
    p_key       text,
    p_payload   jsonb DEFAULT '{}',
    p_run_at    timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    INSERT INTO tasks (tenant, task_type, key, payload, next_run_at)
    VALUES (p_tenant, p_task_type, p_key,
            convert_to(coalesce(p_payload, '{}'::jsonb)::text, 'UTF8'),
            coalesce(p_run_at, now()))
    ON CONFLICT ON CONSTRAINT tasks_unique_key DO NOTHING
    RETURNING id
$$;
