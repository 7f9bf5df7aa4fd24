#!/usr/bin/env bash
# wrk.sh BIN LABEL [CONNS] [SECS]: a fresh server, accounts made by a 1 s `onceledger bench`, then
# `wrk` (Debian package wrk) sending charges with fresh keys (wrk-charge.lua): the same load from
# a load generator written in C, to see whether `onceledger bench` itself holds the rate down.
#   scripts/perf/wrk.sh target/release/onceledger w1 64 15
set -euo pipefail
BIN=$1; LABEL=$2; CONNS=${3:-64}; SECS=${4:-15}
PORT=${PORT:-7171}
PERF_DIR=${PERF_DIR:-/tmp/perf}
DATA=$PERF_DIR/data-$LABEL
OUT=$PERF_DIR/out
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$DATA"; mkdir -p "$OUT"
"$BIN" serve --listen 127.0.0.1:$PORT --data-dir "$DATA" > "$OUT/$LABEL.server.log" 2>&1 &
SPID=$!
trap 'kill -TERM $SPID 2>/dev/null; wait $SPID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
RUN=$("$BIN" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --connections 8 \
  --duration 1 2>&1 | sed -n 's/.*run \([0-9a-z]*\),.*/\1/p' | head -1)
RUN=$RUN TOKEN=$(cat "$DATA/admin.token") wrk -t"${WRK_THREADS:-1}" -c"$CONNS" -d"${SECS}s" \
  -s "$HERE/wrk-charge.lua" http://127.0.0.1:$PORT/ 2>&1 | grep -E "Requests/sec|p50|Non-2xx|requests in"
curl -s http://127.0.0.1:$PORT/metrics | grep -E "^onceledger_commit_batch_commands_(sum|count)"
