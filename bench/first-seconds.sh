#!/bin/bash
# A host's executions in its first 10 s after a 600,000-task bulk load through the CLI:
# bench/first-seconds.sh target/release/recur (uses and drops the database first10).
bin=$1; db=first10
dropdb -h 127.0.0.1 -U postgres --if-exists $db >/dev/null 2>&1; createdb -h 127.0.0.1 -U postgres $db
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db
$bin migrate >/dev/null && $bin module deploy noop --example noop >/dev/null
python3 -c "
import sys
w=sys.stdout.write
for i in range(600000): w('{\"type\":\"noop\",\"key\":\"k%d\",\"payload\":{\"every_ms\":1000}}\n' % i)
" | $bin enqueue --bulk >/dev/null
timeout -s TERM 10 $bin host --no-compile-cache >/dev/null 2>&1
psql -h 127.0.0.1 -U postgres -d $db -Atc "SELECT sum(runs) FROM tasks"
