#!/usr/bin/env bash
# prof-server.sh BIN LABEL: a fresh server under the uniform load (64 connections, 14 s); perf
# records the server process alone with DWARF call graphs for 5 s of the measured phase.
#   scripts/perf/prof-server.sh target/release/onceledger p1
#   perf report -i /tmp/perf/out/p1.perf.data --sort comm        # threads
set -euo pipefail
BIN=$1; LABEL=$2
. "$(dirname "$0")/server.sh"
start_server "$BIN" "$LABEL"
"$BIN" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --json --connections 64 \
  --duration 14 --workload uniform > "$OUT/$LABEL.json" 2> "$OUT/$LABEL.human" &
BENCH=$!
sleep 4
perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -p $SPID -o "$OUT/$LABEL.perf.data" \
  -- sleep 5 2>/dev/null
wait $BENCH
grep -v '^bench: ' "$OUT/$LABEL.human" | sed -n 4,9p
