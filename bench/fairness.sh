#!/usr/bin/env bash
# usage: bench/fairness.sh BIN NAME SMALL_TASKS [SECONDS]
# One host; tenant big: 600,000 noop tasks every 1 s, tenant small: SMALL_TASKS every 1 s
# (0: none), both through `recur enqueue --bulk`; prints each tenant's runs after SECONDS
# (20) and how late small's oldest due task was, sampled. NAME names the database.
set -u
BIN=$1; NAME=$2; SMALL=$3; SECS=${4:-20}
DB=fair_$NAME
psql -q -U postgres -h 127.0.0.1 -c "drop database if exists $DB with (force)" -c "create database $DB" >/dev/null 2>&1
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
$BIN migrate >/dev/null
$BIN tenant create big >/dev/null 2>&1; $BIN tenant create small >/dev/null 2>&1
$BIN module deploy noop --example noop --tenant big >/dev/null
$BIN module deploy noop --example noop --tenant small >/dev/null
python3 -c '
import sys
for i in range(600000):
    sys.stdout.write("{\"type\":\"noop\",\"key\":\"b%d\",\"tenant\":\"big\",\"payload\":{\"every_ms\":1000}}\n" % i)
' | $BIN enqueue --bulk >/dev/null
if [ "$SMALL" -gt 0 ]; then
python3 -c '
import sys
for i in range(int(sys.argv[1])):
    sys.stdout.write("{\"type\":\"noop\",\"key\":\"s%d\",\"tenant\":\"small\",\"payload\":{\"every_ms\":1000}}\n" % i)
' $SMALL | $BIN enqueue --bulk >/dev/null
fi
$BIN host >/tmp/fair-$NAME.log 2>&1 &
HOST=$!
START=$(date +%s.%N)
: > /tmp/late-$NAME.txt
while true; do
  NOW=$(date +%s.%N)
  if (( $(echo "$NOW - $START >= $SECS" | bc) )); then break; fi
  psql -qAt -U postgres -h 127.0.0.1 -d $DB -c "SELECT coalesce(extract(epoch FROM now() - min(next_run_at)) * 1000, 0)::int FROM tasks WHERE tenant = 'small' AND status = 0 AND next_run_at <= now()" >> /tmp/late-$NAME.txt
  sleep 0.2
done
kill -TERM $HOST; wait $HOST
psql -qAt -U postgres -h 127.0.0.1 -d $DB -c "SELECT tenant, sum(runs) FROM tasks GROUP BY tenant ORDER BY tenant" | tr '\n' ' '
python3 - "$NAME" "$SMALL" "$SECS" <<'PY'
import sys
name, small, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
late = sorted(int(x) for x in open(f"/tmp/late-{name}.txt") if x.strip())
if small and late:
    p = lambda q: late[min(len(late)-1, int(q*len(late)))]
    print(f" | small late ms p50 {p(0.5)} p99 {p(0.99)} max {late[-1]} ({len(late)} samples); due runs {small*secs:.0f}")
else:
    print()
PY
