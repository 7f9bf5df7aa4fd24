#!/usr/bin/env bash
# pages.sh BIN LABEL: a fresh server under a one-connection load; strace counts the writer
# thread's pwrite64 and fdatasync calls for 2 s and prints 4 KiB pages written per commit
# (redb's 2-phase commit: two fdatasyncs and two header writes per commit).
#   scripts/perf/pages.sh target/release/onceledger p1
set -euo pipefail
BIN=$1; LABEL=$2
PORT=${PORT:-7171}
PERF_DIR=${PERF_DIR:-/tmp/perf}
DATA=$PERF_DIR/data-$LABEL
OUT=$PERF_DIR/out
rm -rf "$DATA"; mkdir -p "$OUT"
"$BIN" serve --listen 127.0.0.1:$PORT --data-dir "$DATA" > "$OUT/$LABEL.server.log" 2>&1 &
SPID=$!
trap 'kill -TERM $SPID 2>/dev/null; wait $SPID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
"$BIN" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --connections 1 \
  --duration 7 > "$OUT/$LABEL.bench" 2>&1 &
BENCH=$!
sleep 4
WRITER=$(for t in /proc/$SPID/task/*; do [ "$(cat "$t/comm")" = "onceledger-writ" ] && basename "$t"; done)
timeout 2 strace -c -p "$WRITER" -e trace=pwrite64,fdatasync 2>&1 \
  | awk '/pwrite64/{p=$4} /fdatasync/{f=$4} END{printf "pages per commit %.2f (%d pwrites, %d commits)\n", p/(f/2)-2, p, f/2}'
wait $BENCH
