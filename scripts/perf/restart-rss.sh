#!/usr/bin/env bash
# restart-rss.sh BIN [VAR=value ...]: start BIN on the store big.sh left ($PERF_DIR/data-big, port
# 7272 free), run 20 s of 64-connection uniform load, print RSS every 2 s, the rate, the peak RSS
# and the mappings over 1 MB (heap and allocator arenas), then stop it. VAR=value pairs go into
# the server's environment (MALLOC_ARENA_MAX=1, say). Every run adds its charges to the store.
set -u
BIN=$1; shift
PORT=${PORT:-7272}
PERF_DIR=${PERF_DIR:-/tmp/perf}
DATA=$PERF_DIR/data-big; OUT=$PERF_DIR/out
mkdir -p "$OUT"
env "$@" "$BIN" serve --listen 127.0.0.1:$PORT --data-dir "$DATA" > "$OUT/restart-rss.server.log" 2>&1 &
SPID=$!
trap 'kill -TERM $SPID 2>/dev/null; wait $SPID 2>/dev/null' EXIT
until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null; do sleep 0.05; done
echo "ready: $(grep VmRSS /proc/$SPID/status)"
"${CLIENT_BIN:-$BIN}" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" \
  --connections 64 --duration 20 > "$OUT/restart-rss.json" 2>/dev/null &
BENCH=$!
for _ in $(seq 10); do sleep 2; echo -n "$(awk '/VmRSS/{print $2}' /proc/$SPID/status) kB  "; done; echo
wait $BENCH
grep -E "new charges/s|latency" "$OUT/restart-rss.json" | head -2
grep VmHWM /proc/$SPID/status
awk '/^[0-9a-f]+-[0-9a-f]+ /{range=$1; name=$6} /^Rss:/{ if ($2>1000) print range, name, $2" kB"}' \
  /proc/$SPID/smaps
