#!/usr/bin/env bash
# history.sh BIN LABEL [CHARGES] [SECS]: the read side of history at size. A fresh server, then
# `onceledger bench --workload hot` puts CHARGES (default 1,000,000) charges on one merchant, so
# its statement holds that many postings. Then, unloaded (one connection, one request at a time,
# `wrk` from Debian), for SECS seconds each:
#   statement: a page of 100 postings from a random place (starting_after a random posting of
#              the account, random order);
#   as_of_seq: the balance as of a random event seq of the account's history;
#   as_of:     the balance as of a random instant between its first and last posting.
# Prints wrk's latency percentiles (p50/p90/p99) and the count of non-200 answers (must be 0), and
# the device bytes written per charge during the load.
#   scripts/perf/history.sh target/release/onceledger h1 1000000 20
set -euo pipefail
BIN=$1; LABEL=$2; CHARGES=${3:-1000000}; SECS=${4:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
command -v wrk >/dev/null || { echo "history.sh needs wrk (Debian: apt-get install wrk)" >&2; exit 2; }
. "$HERE/server.sh"
start_server "$BIN" "$LABEL"
TOKEN=$(cat "$DATA/admin.token")
DEV=$(basename "$(df --output=source "$PERF_DIR" | tail -1)")
device_written() { awk -v d="$DEV" '$3==d {printf "%.0f\n", $10*512}' /proc/diskstats; }
W0=$(device_written)
"$BIN" bench --url http://127.0.0.1:$PORT --token-file "$DATA/admin.token" --workload hot \
  --customers 100 --merchants 1 --connections 64 --count "$CHARGES" --json \
  > "$OUT/$LABEL.load.json" 2> "$OUT/$LABEL.load.human"
W1=$(device_written)
RUN=$(sed -n 's/.*run \([0-9a-z]*\),.*/\1/p' "$OUT/$LABEL.load.human" | head -1)
ACCOUNT="$RUN-m0"
get() { curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$1"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin)['data'][0]; print(d['$1'])"; }
FIRST_SEQ=$(get "/v1/accounts/$ACCOUNT/postings?limit=1&order=asc" | field event_seq)
LAST_SEQ=$(get "/v1/accounts/$ACCOUNT/postings?limit=1" | field event_seq)
FIRST_AT=$(get "/v1/accounts/$ACCOUNT/postings?limit=1&order=asc" | field created_at)
LAST_AT=$(get "/v1/accounts/$ACCOUNT/postings?limit=1" | field created_at)
to_ms() { python3 -c "import datetime,sys; print(int(datetime.datetime.fromisoformat(sys.argv[1].replace('Z','+00:00')).timestamp()*1000))" "$1"; }
POSTINGS=$((LAST_SEQ - FIRST_SEQ + 1))
echo "load: $(grep -E 'charges/s|requests/s' "$OUT/$LABEL.load.human" | head -2 | tr '\n' ' ')"
echo "account $ACCOUNT: postings by seq span $POSTINGS (seqs $FIRST_SEQ..$LAST_SEQ), $FIRST_AT .. $LAST_AT"
echo "device bytes written per charge during the load: $(( (W1 - W0) / CHARGES ))"
for MODE in statement as_of_seq as_of; do
  echo "== $MODE"
  MODE=$MODE TOKEN=$TOKEN ACCOUNT=$ACCOUNT FIRST_SEQ=$FIRST_SEQ LAST_SEQ=$LAST_SEQ \
    FIRST_MS=$(to_ms "$FIRST_AT") LAST_MS=$(to_ms "$LAST_AT") \
    wrk -t1 -c1 -d"${SECS}s" -s "$HERE/wrk-history.lua" http://127.0.0.1:$PORT/ 2>&1 \
    | grep -E "requests in|Requests/sec|p50|non-200|rror" || true
done
