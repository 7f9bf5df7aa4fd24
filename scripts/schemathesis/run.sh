#!/usr/bin/env bash
# The OpenAPI contract run: Schemathesis (every check; the examples, coverage, fuzzing and stateful
# phases) against a real server on loopback with a fresh data directory, fixed seed, bounded
# examples. Exits non-zero on any finding; afterwards `onceledger check` must pass on the store.
#   scripts/schemathesis/run.sh [BIN] [MAX_EXAMPLES]     (default target/release/onceledger, 40)
# SCHEMATHESIS names the schemathesis command (default: schemathesis on PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/onceledger}
EXAMPLES=${2:-40}
SEED=${SEED:-1}
ST=${SCHEMATHESIS:-schemathesis}
WORK=$(mktemp -d)
"$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" > "$WORK/server.out" 2> "$WORK/server.log" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do
  grep -q '^listening on ' "$WORK/server.out" 2>/dev/null && break
  sleep 0.1
done
ADDR=$(sed -n 's/^listening on //p' "$WORK/server.out")
[ -n "$ADDR" ] || { echo "the server did not start:"; cat "$WORK/server.log"; exit 1; }
TOKEN=$(cat "$WORK/data/admin.token")
echo "schemathesis $("$ST" --version | awk '{print $NF}') against http://$ADDR, seed $SEED, $EXAMPLES examples per operation"
status=0
SCHEMATHESIS_HOOKS=scripts/schemathesis/hooks.py ONCELEDGER_TOKEN="$TOKEN" ONCELEDGER_TOKEN_ID=1 \
  ONCELEDGER_URL="http://$ADDR" \
  "$ST" --config-file scripts/schemathesis/schemathesis.toml run "http://$ADDR/openapi.json" \
    --checks all --seed "$SEED" --max-examples "$EXAMPLES" --workers 1 \
    --generation-database none --no-color --request-timeout 10 \
    --report junit --report-dir "$WORK/report" || status=$?
kill -TERM $SERVER; wait $SERVER || true
trap 'rm -rf "$WORK"' EXIT
"$BIN" check --data-dir "$WORK/data" > /dev/null || { echo "onceledger check failed after the run"; exit 1; }
exit $status
