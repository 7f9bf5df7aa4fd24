#!/usr/bin/env bash
# pages.sh BIN LABEL: a fresh server under a one-connection load; strace counts the writer
# thread's pwrite64 and fdatasync calls for 2 s and prints 4 KiB pages written per commit
# (redb's 2-phase commit: two fdatasyncs and two header writes per commit).
#   scripts/perf/pages.sh target/release/onceledger p1
set -euo pipefail
BIN=$1; LABEL=$2
. "$(dirname "$0")/server.sh"
start_server "$BIN" "$LABEL"
"$BIN" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --connections 1 \
  --duration 7 > "$OUT/$LABEL.bench" 2>&1 &
BENCH=$!
sleep 4
WRITER=$(for t in /proc/$SPID/task/*; do [ "$(cat "$t/comm")" = "onceledger-writ" ] && basename "$t"; done)
timeout 2 strace -c -p "$WRITER" -e trace=pwrite64,fdatasync 2>&1 \
  | awk '/pwrite64/{p=$4} /fdatasync/{f=$4} END{printf "pages per commit %.2f (%d pwrites, %d commits)\n", p/(f/2)-2, p, f/2}'
wait $BENCH
