#!/usr/bin/env bash
# Unthrottled catch-up, terminal to hub, on loopback (BENCHMARKS.md).
# A terminal takes CHARGES charges while its hub is down; then the hub starts and the script
# measures how long the backlog takes to drain, from the hub's own /v1/replication/origins.
# Usage: scripts/bench-catch-up.sh [CHARGES]   (release build: cargo build --release)
set -euo pipefail
CHARGES=${1:-200000}
BIN=${BIN:-target/release/onceledger}
WORK=$(mktemp -d /tmp/onceledger-catch-up.XXXXXX)
T_ADDR=127.0.0.1:7181
H_ADDR=127.0.0.1:7182
cleanup() { kill "${T_PID:-}" "${H_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN" serve --listen "$T_ADDR" --data-dir "$WORK/terminal" --upstream "http://$H_ADDR" \
  --replicate-backoff-max 200ms >"$WORK/terminal.log" 2>&1 &
T_PID=$!
until curl -sf "http://$T_ADDR/readyz" >/dev/null; do sleep 0.1; done
echo "== backlog: $CHARGES charges on the terminal, hub down"
"$BIN" bench --url "http://$T_ADDR" --connections 32 --count "$CHARGES" | tail -3
NODE=$(curl -sf "http://$T_ADDR/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')
LAST=$(curl -sf "http://$T_ADDR/v1/events?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["held"]["last"])')
echo "== terminal $NODE holds $LAST events; starting the hub"
START=$(date +%s.%N)
"$BIN" serve --listen "$H_ADDR" --data-dir "$WORK/hub" >"$WORK/hub.log" 2>&1 &
H_PID=$!
python3 "$(dirname "$0")/wait-applied.py" "$H_ADDR" "$NODE" "$LAST" "$START" "terminal -> hub"
