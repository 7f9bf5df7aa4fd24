# server.sh: sourced by the perf scripts (run, pages, prof-server, wrk).
# start_server BIN LABEL: a fresh data dir $PERF_DIR/data-LABEL, the server on 127.0.0.1:$PORT
# logging to $OUT/LABEL.server.log, ready (GET /readyz) on return. SPID is its pid; on EXIT it is
# stopped and waited for, so the next script finds the port free.
PORT=${PORT:-7171}
PERF_DIR=${PERF_DIR:-/tmp/perf}
OUT=$PERF_DIR/out
start_server() {
  local bin=$1 label=$2
  DATA=$PERF_DIR/data-$label
  rm -rf "$DATA"; mkdir -p "$OUT"
  "$bin" serve --listen 127.0.0.1:$PORT --data-dir "$DATA" > "$OUT/$label.server.log" 2>&1 &
  SPID=$!
  trap 'kill -TERM $SPID 2>/dev/null; wait $SPID 2>/dev/null || true' EXIT
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
}
