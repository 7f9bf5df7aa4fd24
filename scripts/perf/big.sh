#!/usr/bin/env bash
# big.sh BIN: 5 M charges into one server (256 connections), its peak RSS, then /readyz after
# SIGKILL: twice idle, once 8 s into a 64-connection load.
set -u
BIN=$1
PORT=${PORT:-7272}
PERF_DIR=${PERF_DIR:-/tmp/perf}
DATA=$PERF_DIR/data-big; OUT=$PERF_DIR/out; HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$DATA"; mkdir -p "$OUT"
start() { "$BIN" serve --listen 127.0.0.1:$PORT --data-dir "$DATA" > "$OUT/big.server.log" 2>&1 & SPID=$!; }
ready_after_kill() {
  kill -KILL $SPID; wait $SPID 2>/dev/null
  local t0; t0=$(date +%s.%N); start
  until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null; do sleep 0.01; done
  echo "readyz after $(echo "$(date +%s.%N) - $t0" | bc) s"
  grep -E "brought up|read back" "$OUT/big.server.log"
}
start
until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null; do sleep 0.1; done
echo "start $(date +%T) $("$HERE/fprobe.sh")"
"$BIN" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --connections 256 \
  --count 5000000 > "$OUT/big.json" 2> "$OUT/big.human"
# The summary is on stdout; stderr has the progress lines.
echo "loaded $(date +%T)"; head -12 "$OUT/big.json"
echo "peak rss: $(grep VmHWM /proc/$SPID/status)"
ls -l "$DATA/onceledger.redb"; du -h "$DATA/onceledger.redb"
ready_after_kill
ready_after_kill
"$BIN" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --connections 64 \
  --duration 20 > "$OUT/big2.json" 2> "$OUT/big2.human" &
BENCH=$!
sleep 8
ready_after_kill
# The bench only: a bare `wait` would also wait for the server, which runs until the TERM below.
wait $BENCH
echo "peak rss after the restart under load: $(grep VmHWM /proc/$SPID/status)"
head -12 "$OUT/big2.json"
kill -TERM $SPID
