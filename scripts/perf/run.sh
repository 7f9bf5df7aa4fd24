#!/usr/bin/env bash
# run.sh BIN LABEL [bench args...]: a fresh data dir, start the server, run `onceledger bench`
# against it, print its summary plus the server's CPU ticks, bytes written and peak RSS, stop it.
#   scripts/perf/run.sh target/release/onceledger u1 --connections 64 --duration 15 --workload uniform
set -euo pipefail
BIN=$1; LABEL=$2; shift 2
PORT=${PORT:-7171}
PERF_DIR=${PERF_DIR:-/tmp/perf}
DATA=$PERF_DIR/data-$LABEL
OUT=$PERF_DIR/out
rm -rf "$DATA"; mkdir -p "$OUT"
"$BIN" serve --listen 127.0.0.1:$PORT --data-dir "$DATA" > "$OUT/$LABEL.server.log" 2>&1 &
SPID=$!
trap 'kill -TERM $SPID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
S0=$(awk '{print $14+$15}' /proc/$SPID/stat)
W0=$(awk '/^write_bytes/{print $2}' /proc/$SPID/io)
"${CLIENT_BIN:-$BIN}" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --json "$@" \
  > "$OUT/$LABEL.json" 2> "$OUT/$LABEL.human"
S1=$(awk '{print $14+$15}' /proc/$SPID/stat)
W1=$(awk '/^write_bytes/{print $2}' /proc/$SPID/io)
grep -v '^bench: ' "$OUT/$LABEL.human" | head -40
echo "server cpu ticks (whole run incl. setup): $((S1-S0))  disk write bytes: $((W1-W0))  rss_kb: $(awk '/VmHWM/{print $2}' /proc/$SPID/status)"
