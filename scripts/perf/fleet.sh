#!/usr/bin/env bash
# fleet.sh [CHARGES_PER_TERMINAL] [PARTITION COUNTS...]: events per second into the hubs of a
# partitioned fleet (BENCHMARKS.md, "A fleet split into partitions"), all on loopback.
#
# Fill, once per partition count N (default: 1 2 4): a nats-server (JetStream, file store) of its
# own; 8 terminals started with --nats-partitions N (node ids picked with `onceledger
# partition-of` so that each of 4 partitions, hence each of 2 and of 1, holds 2 of them) each
# take CHARGES_PER_TERMINAL charges from `onceledger bench` and publish them; the terminals and
# the server stop once the stream holds every event.
# Measure, ROUNDS times (default 3), for each N in turn (interleaved, so that a change in the
# machine's load falls on every N alike): that N's nats-server starts again on its store, and N
# hubs (`consume --partition K/N`, empty data directories, so new durables that read the stream
# from its start) start together. The time runs from their start until the hubs together applied
# every event (so it includes opening their stores). Printed: events, seconds, events/s, and the
# CPU seconds nats-server and the hubs used (2 cores = 2 CPU seconds per second).
# REPLICAS=R runs R hubs per partition (each with its own durable): events/s then counts every
# copy applied, so it shows what a replica costs.
#   scripts/perf/fleet.sh 25000 1 2 4        (release build; Debian's nats-server)
#   ROUNDS=1 REPLICAS=2 scripts/perf/fleet.sh 25000 1
set -euo pipefail
CHARGES=${1:-25000}
shift || true
COUNTS=("$@")
[ ${#COUNTS[@]} -eq 0 ] && COUNTS=(1 2 4)
BIN=${BIN:-target/release/onceledger}
NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
WORK=$(mktemp -d /tmp/onceledger-fleet.XXXXXX)
NATS_PORT=${NATS_PORT:-7281}
BASE_PORT=${BASE_PORT:-7300}
ROUNDS=${ROUNDS:-3}
REPLICAS=${REPLICAS:-1}
TERMINALS=8
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ready() { for _ in $(seq 200); do curl -sf "http://$1/readyz" >/dev/null && return 0; sleep 0.05; done; return 1; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
seconds() { local hz; hz=$(getconf CLK_TCK); echo "$(( $1 / hz )).$(printf '%02d' $(( $1 % hz * 100 / hz )))"; }
stop() { for pid in "$@"; do kill -TERM "$pid"; wait "$pid" || true; done; }
start_nats() {
  "$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$1/nats" >>"$1/nats.log" 2>&1 &
  S_PID=$!; PIDS+=("$S_PID")
  for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT) 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
# Terminal node ids, 2 in each of 4 partitions (balanced under 2 and 1 partitions too).
mapfile -t NODES < <("$BIN" partition-of --partitions 4 $(seq -f 'till-%g' 0 63) \
  | sort -k2,2n -s | awk '{n[$2]++} n[$2]<=2 {print $1}')
[ ${#NODES[@]} -eq $TERMINALS ] || { echo "could not pick $TERMINALS node ids"; exit 1; }

declare -A TOTAL
for N in "${COUNTS[@]}"; do
  RUN=$WORK/n$N; mkdir -p "$RUN"
  start_nats "$RUN"
  T_PIDS=(); T_ADDRS=()
  for i in $(seq 0 $((TERMINALS - 1))); do
    ADDR=127.0.0.1:$((BASE_PORT + i))
    "$BIN" serve --listen "$ADDR" --data-dir "$RUN/t$i" --node-id "${NODES[$i]}" \
      --nats "nats://127.0.0.1:$NATS_PORT" --nats-stream FLEET --nats-partitions "$N" \
      >"$RUN/t$i.log" 2>&1 &
    T_PIDS+=($!); PIDS+=($!); T_ADDRS+=("$ADDR")
  done
  TOTAL[$N]=0
  for i in $(seq 0 $((TERMINALS - 1))); do
    ADDR=${T_ADDRS[$i]}; ready "$ADDR"
    "$BIN" bench --url "http://$ADDR" --token-file "$RUN/t$i/admin.token" --connections 16 \
      --count "$CHARGES" --customers 100 --merchants 10 >"$RUN/bench$i.log" 2>&1
  done
  # Every event in the stream: each terminal's NATS lag is 0.
  for i in $(seq 0 $((TERMINALS - 1))); do
    ADDR=${T_ADDRS[$i]}; H="Authorization: Bearer $(cat "$RUN/t$i/admin.token")"
    until curl -sf -H "$H" "http://$ADDR/metrics" | grep -q '^onceledger_outbox_lag_events{sink="nats"} 0$'; do sleep 0.2; done
    LAST=$(curl -sf -H "$H" "http://$ADDR/v1/events?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["held"]["last"])')
    TOTAL[$N]=$((TOTAL[$N] + LAST))
  done
  stop "${T_PIDS[@]}" "$S_PID"
  echo "filled: N=$N, ${TOTAL[$N]} events in the stream"
done

for round in $(seq 1 "$ROUNDS"); do
  for N in "${COUNTS[@]}"; do
    RUN=$WORK/n$N; rm -rf "$RUN"/hub*
    start_nats "$RUN"
    H_PIDS=(); HUBS=()
    S0=$(ticks "$S_PID")
    START=$(date +%s.%N)
    for k in $(seq 0 $((N - 1))); do
      for r in $(seq 0 $((REPLICAS - 1))); do
        ADDR=127.0.0.1:$((BASE_PORT + 50 + k * REPLICAS + r)); HUB=$RUN/hub$k-$r
        "$BIN" consume --listen "$ADDR" --data-dir "$HUB" --nats "nats://127.0.0.1:$NATS_PORT" \
          --stream FLEET --partition "$k/$N" >"$HUB.log" 2>&1 &
        H_PIDS+=($!); PIDS+=($!); HUBS+=("$ADDR=$HUB/admin.token")
      done
    done
    printf 'round %s load %s ' "$round" "$(cut -d' ' -f1 /proc/loadavg)"
    python3 - "$START" "$((TOTAL[$N] * REPLICAS))" "${HUBS[@]}" <<'EOF'
import json, sys, time, urllib.request
start, total, hubs = float(sys.argv[1]), int(sys.argv[2]), [h.split("=", 1) for h in sys.argv[3:]]
deadline, applied = time.time() + 900, 0
def applied_on(addr, token_file):
    try:
        token = open(token_file).read().strip()
        request = urllib.request.Request(f"http://{addr}/v1/replication/origins",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            return sum(o["applied_through"] for o in json.load(answer)["origins"])
    except OSError:
        return 0
while applied < total and time.time() < deadline:
    applied = sum(applied_on(addr, token) for addr, token in hubs)
    time.sleep(0.02)
elapsed = time.time() - start
print(f"hubs={len(hubs)} events={applied}/{total} seconds={elapsed:.2f} events_per_s={applied / elapsed:,.0f}", end=" ")
sys.exit(0 if applied >= total else 1)
EOF
    S1=$(ticks "$S_PID"); HUB_TICKS=0
    for pid in "${H_PIDS[@]}"; do HUB_TICKS=$((HUB_TICKS + $(ticks "$pid"))); done
    echo "cpu_s nats-server $(seconds $((S1 - S0))) hubs $(seconds $HUB_TICKS)"
    stop "${H_PIDS[@]}" "$S_PID"
  done
done
