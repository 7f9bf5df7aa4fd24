#!/usr/bin/env bash
# Catch-up through NATS JetStream, node -> JetStream -> hub, on loopback (BENCHMARKS.md).
# A node takes CHARGES charges while nats-server is down; then nats-server and a consuming hub
# start, and the script measures how long until the hub applied every event.
# Usage: scripts/bench-nats.sh [CHARGES]   (release build; Debian's nats-server)
set -euo pipefail
CHARGES=${1:-100000}
BIN=${BIN:-target/release/onceledger}
NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
WORK=$(mktemp -d /tmp/onceledger-nats.XXXXXX)
N_ADDR=127.0.0.1:7191
H_ADDR=127.0.0.1:7192
NATS_PORT=7193
cleanup() { kill "${N_PID:-}" "${H_PID:-}" "${S_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN" serve --listen "$N_ADDR" --data-dir "$WORK/node" --nats "nats://127.0.0.1:$NATS_PORT" \
  --nats-stream BENCH --replicate-backoff-max 200ms >"$WORK/node.log" 2>&1 &
N_PID=$!
until curl -sf "http://$N_ADDR/readyz" >/dev/null; do sleep 0.1; done
echo "== backlog: $CHARGES charges on the node, nats-server down"
"$BIN" bench --url "http://$N_ADDR" --connections 32 --count "$CHARGES" | tail -3
NODE=$(curl -sf "http://$N_ADDR/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')
LAST=$(curl -sf "http://$N_ADDR/v1/events?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["held"]["last"])')
echo "== node $NODE holds $LAST events; starting nats-server and the consuming hub"
START=$(date +%s.%N)
"$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
S_PID=$!
"$BIN" consume --listen "$H_ADDR" --data-dir "$WORK/hub" --nats "nats://127.0.0.1:$NATS_PORT" \
  --stream BENCH --replicate-backoff-max 200ms >"$WORK/hub.log" 2>&1 &
H_PID=$!
python3 "$(dirname "$0")/wait-applied.py" "$H_ADDR" "$NODE" "$LAST" "$START" "node -> JetStream -> hub"
