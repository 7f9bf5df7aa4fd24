#!/usr/bin/env bash
# run.sh BIN LABEL [bench args...]: a fresh data dir, start the server, run `onceledger bench`
# against it, print its summary plus the server's CPU ticks, bytes written and peak RSS, stop it.
#   scripts/perf/run.sh target/release/onceledger u1 --connections 64 --duration 15 --workload uniform
set -euo pipefail
BIN=$1; LABEL=$2; shift 2
. "$(dirname "$0")/server.sh"
start_server "$BIN" "$LABEL"
S0=$(awk '{print $14+$15}' /proc/$SPID/stat)
W0=$(awk '/^write_bytes/{print $2}' /proc/$SPID/io)
"${CLIENT_BIN:-$BIN}" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --json "$@" \
  > "$OUT/$LABEL.json" 2> "$OUT/$LABEL.human"
S1=$(awk '{print $14+$15}' /proc/$SPID/stat)
W1=$(awk '/^write_bytes/{print $2}' /proc/$SPID/io)
grep -v '^bench: ' "$OUT/$LABEL.human" | head -40
echo "server cpu ticks (whole run incl. setup): $((S1-S0))  disk write bytes: $((W1-W0))  rss_kb: $(awk '/VmHWM/{print $2}' /proc/$SPID/status)"
