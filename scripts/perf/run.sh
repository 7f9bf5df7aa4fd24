#!/usr/bin/env bash
# run.sh BIN LABEL [bench args...]: a fresh data dir, start the server, run `onceledger bench`
# against it, print its summary plus the server's CPU ticks, bytes written and peak RSS, stop it.
#   scripts/perf/run.sh target/release/onceledger u1 --connections 64 --duration 15 --workload uniform
set -euo pipefail
BIN=$1; LABEL=$2; shift 2
. "$(dirname "$0")/server.sh"
start_server "$BIN" "$LABEL"
# Bytes the data directory's device wrote (whole machine: run on a quiet one). Not the process's
# /proc/PID/io write_bytes: it counts a whole dirty range per fdatasync of an in-place overwrite
# (~2 MiB per journal record here), while the device sees one page.
DEV=$(basename "$(df --output=source "$PERF_DIR" | tail -1)")
device_written() { awk -v d="$DEV" '$3==d {printf "%.0f\n", $10*512}' /proc/diskstats; }
S0=$(awk '{print $14+$15}' /proc/$SPID/stat)
W0=$(device_written)
"${CLIENT_BIN:-$BIN}" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --json "$@" \
  > "$OUT/$LABEL.json" 2> "$OUT/$LABEL.human"
S1=$(awk '{print $14+$15}' /proc/$SPID/stat)
W1=$(device_written)
grep -v '^bench: ' "$OUT/$LABEL.human" | head -40
echo "server cpu ticks (whole run incl. setup): $((S1-S0))  device write bytes: $((W1-W0))  rss_kb: $(awk '/VmHWM/{print $2}' /proc/$SPID/status)"
