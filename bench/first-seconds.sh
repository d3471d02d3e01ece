#!/bin/bash
# A host's executions in its first 10 s after a 600,000-task load, by the door DOOR:
#   bench/first-seconds.sh target/release/recur [cli|sql|restart]
# cli: `recur enqueue --bulk`; sql: one statement of 600,000 `recur_enqueue()` calls;
# restart: the CLI load, a first host for 10 s, then a second host's first 10 s (its
# figure is the second host's executions alone). Uses and drops the database first10.
bin=$1; door=${2:-cli}; db=first10
dropdb -h 127.0.0.1 -U postgres --if-exists $db >/dev/null 2>&1; createdb -h 127.0.0.1 -U postgres $db
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db
$bin migrate >/dev/null && $bin module deploy noop --example noop >/dev/null
runs() { psql -h 127.0.0.1 -U postgres -d $db -Atc "SELECT sum(runs) FROM tasks"; }
if [ "$door" = sql ]; then
    psql -h 127.0.0.1 -U postgres -d $db -qc "SELECT count(recur_enqueue('default', 'noop', 'k' || i, '{\"every_ms\": 1000}')) FROM generate_series(0, 599999) AS i" >/dev/null
else
    python3 -c "
import sys
w=sys.stdout.write
for i in range(600000): w('{\"type\":\"noop\",\"key\":\"k%d\",\"payload\":{\"every_ms\":1000}}\n' % i)
" | $bin enqueue --bulk >/dev/null
fi
before=0
if [ "$door" = restart ]; then
    timeout -s TERM 10 $bin host --no-compile-cache >/dev/null 2>&1
    before=$(runs)
fi
timeout -s TERM 10 $bin host --no-compile-cache >/dev/null 2>&1
echo $(( $(runs) - before ))
