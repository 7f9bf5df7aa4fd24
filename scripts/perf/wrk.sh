#!/usr/bin/env bash
# wrk.sh BIN LABEL [CONNS] [SECS]: a fresh server, accounts made by a 1 s `onceledger bench`, then
# `wrk` (Debian package wrk) sending charges with fresh keys (wrk-charge.lua): the same load from
# a load generator written in C, to see whether `onceledger bench` itself holds the rate down.
#   scripts/perf/wrk.sh target/release/onceledger w1 64 15
set -euo pipefail
BIN=$1; LABEL=$2; CONNS=${3:-64}; SECS=${4:-15}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/server.sh"
start_server "$BIN" "$LABEL"
RUN=$("$BIN" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --connections 8 \
  --duration 1 2>&1 | sed -n 's/.*run \([0-9a-z]*\),.*/\1/p' | head -1)
RUN=$RUN TOKEN=$(cat "$DATA/admin.token") wrk -t"${WRK_THREADS:-1}" -c"$CONNS" -d"${SECS}s" \
  -s "$HERE/wrk-charge.lua" http://127.0.0.1:$PORT/ 2>&1 | grep -E "Requests/sec|p50|Non-2xx|requests in"
curl -s http://127.0.0.1:$PORT/metrics | grep -E "^onceledger_commit_batch_commands_(sum|count)"
