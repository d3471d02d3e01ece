#!/usr/bin/env bash
# What PostgreSQL allows on this machine without recur's host in the way: the loops that
# BENCHMARKS.md (thirteenth measurement) sets recur's own pipeline against, run by pgbench.
#
#   bare               a classic job queue's two statements: lease 500 jobs with UPDATE ...
#                      FOR UPDATE SKIP LOCKED, then DELETE them (two row writes per job), on
#                      a table of its own; 1,000,000 jobs worked to zero
#   minimal-burn       one row write per execution on recur's own tasks table: claim 500
#                      under row locks and mark them done in the same transaction; the
#                      1,000,000 tasks worked to zero
#   minimal-recurring  the same, rescheduling each task 5 s out, for 30 s; with BY=ctid
#                      the update finds the claimed rows by their ctid instead of
#                      through the primary key, as a locked claim's commit does
#                      (nineteenth measurement), and BATCH=N claims N instead of 500
#   recur-sql          recur's own claim_locked.sql and commit_timed.sql (host/src/sql), with its claims
#                      row, batches of 1000 rescheduled 5 s out, for 30 s; with BURN=1,
#                      the 1,000,000 tasks all due and completed, worked to zero
#
# Usage: bench/pgbench/run.sh MODE [CLIENTS]   (CLIENTS: default 2, 3 for recur-sql)
# HOLD_MS=N (recur-sql only) holds each batch's transaction N ms between its claim and
# its commit, as a host's batch is held while it runs (BENCHMARKS.md, fourteenth
# measurement).
# LAYOUT (the recurring loops) lays the first due times over the tasks as `recur bench
# --layout` does, which moves the figures by a third (fifteenth measurement):
#   striped    task id falls due at id % 5000 ms: a batch of 1000 takes 5 neighbours
#              on each of 200 pages (the default, and what the thirteenth and
#              fourteenth measurements ran)
#   scattered  as `recur bench`'s default: about one task per page in a batch
#   clustered  due times in id order, as `recur bench --layout clustered`: whole pages
# The loops on recur's table reuse the database a `recur bench` run leaves behind
# (recur_bench), so run `recur bench --mode burn --tasks 1000000` first. Connects as
# PGHOST/PGUSER (default 127.0.0.1, postgres).
set -euo pipefail
mode=${1:?usage: run.sh bare|minimal-burn|minimal-recurring|recur-sql [clients]}
clients=${2:-$([ "$mode" = recur-sql ] && echo 3 || echo 2)}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGOPTIONS=--client-min-messages=warning
case ${LAYOUT:-striped} in striped | scattered | clustered) ;; *)
    echo "unknown LAYOUT $LAYOUT: striped, scattered or clustered" >&2
    exit 2
    ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
script=$(mktemp)
trap 'rm -f "$script"' EXIT

sql() { psql -qtA -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
# Work a table of 1,000,000 down to zero and print the rate.
burn() { # database, count query, batch
    local start end left
    start=$(date +%s.%N)
    pgbench -n -c "$clients" -j 2 -t $((1000000 / $3 / clients)) -f "$script" "$1" >/dev/null
    end=$(date +%s.%N)
    left=$(sql "$1" "$2")
    echo "$mode, $clients clients: $(python3 -c "print(round((1000000 - $left) / ($end - $start)))") executions/s ($left left)"
}
# The machine's busy CPU time so far, in clock ticks (user, nice, system, irq, softirq).
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# Run 30 s against a recurring table and print the runs it recorded per second and the
# machine's CPU per run (pgbench's own share included, about 2%).
recurring() {
    local before after busy0 busy1
    before=$(sql recur_bench "SELECT sum(runs) FROM tasks")
    busy0=$(busy_ticks)
    pgbench -n -c "$clients" -j 2 -T 30 -f "$script" recur_bench >/dev/null
    busy1=$(busy_ticks)
    after=$(sql recur_bench "SELECT sum(runs) FROM tasks")
    echo "$mode, $clients clients: $(((after - before) / 30)) executions/s over 30 s," \
        "$(python3 -c "print(round(($busy1 - $busy0) * 1e6 / $(getconf CLK_TCK) / ($after - $before), 1))") µs of machine CPU per execution"
}
# The first due times of a recurring loop's tasks, spread over 5 s as LAYOUT says (ids
# run from 1 to 1,000,000, loaded in order).
recurring_due() {
    case ${LAYOUT:-striped} in
    striped) echo "now() + (id % 5000) * interval '1 millisecond'" ;;
    scattered) echo "now() + ((id - 1) * 7919 % 1000000) * interval '5 microseconds'" ;;
    clustered) echo "now() + (id - 1) * interval '5 microseconds'" ;;
    esac
}
reset_tasks() { # the due times to give every task
    sql recur_bench "TRUNCATE claims; UPDATE tasks SET status = 0, lease_token = NULL, due_at = NULL, next_run_at = $1"
    sql recur_bench "VACUUM (ANALYZE) tasks"
    sql recur_bench "CHECKPOINT"
}

case $mode in
bare)
    sql postgres "DROP DATABASE IF EXISTS recur_pgbench_bare" && sql postgres "CREATE DATABASE recur_pgbench_bare"
    sql recur_pgbench_bare "CREATE TABLE bare_jobs (id bigint PRIMARY KEY, run_at timestamptz NOT NULL,
        locked_until timestamptz, payload text);
        INSERT INTO bare_jobs SELECT g, now() - interval '1 minute', NULL, '' FROM generate_series(1, 1000000) g;
        CREATE INDEX ON bare_jobs (run_at)"
    sql recur_pgbench_bare "VACUUM ANALYZE bare_jobs" && sql recur_pgbench_bare "CHECKPOINT"
    cat >"$script" <<'SQL'
WITH l AS (UPDATE bare_jobs SET locked_until = now() + interval '60 seconds' WHERE id IN (SELECT id FROM bare_jobs WHERE run_at <= now() AND (locked_until IS NULL OR locked_until < now()) ORDER BY run_at LIMIT 500 FOR UPDATE SKIP LOCKED) RETURNING id) SELECT quote_literal(coalesce(array_agg(id), '{}')::text) AS ids FROM l \gset
DELETE FROM bare_jobs WHERE id = ANY(:ids::bigint[]);
SQL
    burn recur_pgbench_bare "SELECT count(*) FROM bare_jobs" 500
    sql postgres "DROP DATABASE recur_pgbench_bare"
    ;;
minimal-burn | minimal-recurring)
    if [ "$mode" = minimal-burn ]; then
        reset_tasks "now() - interval '1 minute'"
        write="status = 1"
    else
        reset_tasks "$(recurring_due)"
        write="next_run_at = now() + interval '5 seconds'"
    fi
    case ${BY:-id} in
    id) by=id type=bigint ;;
    ctid) by=ctid type=tid ;;
    *)
        echo "unknown BY $BY: id or ctid" >&2
        exit 2
        ;;
    esac
    cat >"$script" <<SQL
BEGIN;
SELECT quote_literal(coalesce(array_agg($by), '{}')::text) AS ids FROM (SELECT $by FROM tasks WHERE status = 0 AND next_run_at <= now() ORDER BY next_run_at LIMIT ${BATCH:-500} FOR UPDATE SKIP LOCKED) s \gset
UPDATE tasks SET $write, runs = runs + 1, attempt = 0, updated_at = now(), lease_token = NULL, due_at = NULL WHERE $by = ANY(:ids::$type[]);
COMMIT;
SQL
    if [ "$mode" = minimal-burn ]; then
        burn recur_bench "SELECT count(*) FROM tasks WHERE status = 0" "${BATCH:-500}"
    else
        recurring
    fi
    ;;
recur-sql)
    if [ -n "${BURN:-}" ]; then
        reset_tasks "now() - interval '1 minute'"
    else
        reset_tasks "$(recurring_due)"
    fi
    # recur's statements with their parameters written in: the claim returns only its
    # ids, as one array literal for the commit to use, the outcomes reschedule 5 s out
    # (or complete the task, with BURN), and the commit deletes the batch's claims row
    # as recur's does.
    python3 - "$here/../../host/src/sql" >"$script" <<'PY'
import os, re, sys
def statement(name):
    lines = open(f"{sys.argv[1]}/{name}").read().split("\n")
    return " ".join(l.split("--")[0] for l in lines if not l.lstrip().startswith("--"))
claim = statement("claim_locked.sql")
for param, value in [("$1", "1000"), ("$2::text[]", "NULL::text[]"), ("$3::timestamptz", "NULL::timestamptz"),
                     ("$4::text[]", "NULL::text[]"), ("$5::text[]", "NULL::text[]"), ("$6::text[]", "NULL::text[]"),
                     ("$7::tid", "NULL::tid")]:
    claim = claim.replace(param, value)
claim = claim[:claim.rindex("SELECT array_agg(c.id) AS id")] + \
    "SELECT quote_literal(coalesce(array_agg(c.id), '{}')::text) AS ids FROM claimed AS c LEFT JOIN lost_runs AS r ON r.id = c.id"
n = "ARRAY[cardinality(:ids::bigint[])]"
status = 1 if os.environ.get("BURN") else 0
values = {1: ":ids", 2: f"array_fill(NULL::uuid, {n})", 3: f"array_fill({status}::smallint, {n})",
          4: f"array_fill(NULL::bigint, {n})", 5: f"array_fill(5000::bigint, {n})", 6: f"array_fill(false, {n})",
          7: f"array_fill(NULL::bytea, {n})", 8: f"array_fill(0, {n})", 9: f"array_fill(1, {n})",
          10: f"array_fill(NULL::text, {n})", 11: "'{}'", 12: "'{}'", 13: "'{}'", 14: "'{}'", 15: "'{}'",
          16: "'{}'", 17: f"array_fill(NULL::bigint, {n})", 18: ":client_id", 19: "false",
          20: f"array_fill(NULL::tid, {n})"}
commit = re.sub(r"\$(\d+)", lambda m: values[int(m.group(1))], statement("commit_timed.sql"))
print("BEGIN;")
print("SELECT set_config('idle_in_transaction_session_timeout', '60000ms', true), pg_advisory_xact_lock(:client_id);")
print(claim + " \\gset")
if os.environ.get("HOLD_MS"):
    print(f"\\sleep {os.environ['HOLD_MS']} ms")
print("INSERT INTO claims (key, task_ids, host) VALUES (:client_id, :ids::bigint[], 0);")
print(commit + ";")
print("COMMIT;")
PY
    if [ -n "${BURN:-}" ]; then
        burn recur_bench "SELECT count(*) FROM tasks WHERE status = 0" 1000
    else
        recurring
    fi
    ;;
*)
    echo "unknown mode $mode: bare, minimal-burn, minimal-recurring or recur-sql" >&2
    exit 2
    ;;
esac
