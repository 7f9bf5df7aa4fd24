#!/usr/bin/env bash
# prof-server.sh BIN LABEL: a fresh server under the uniform load (64 connections, 14 s); perf
# records the server process alone with DWARF call graphs for 5 s of the measured phase.
#   scripts/perf/prof-server.sh target/release/onceledger p1
#   perf report -i /tmp/perf/out/p1.perf.data --sort comm        # threads
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
"$BIN" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --json --connections 64 \
  --duration 14 --workload uniform > "$OUT/$LABEL.json" 2> "$OUT/$LABEL.human" &
BENCH=$!
sleep 4
perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -p $SPID -o "$OUT/$LABEL.perf.data" \
  -- sleep 5 2>/dev/null
wait $BENCH
grep -v '^bench: ' "$OUT/$LABEL.human" | sed -n 4,9p
