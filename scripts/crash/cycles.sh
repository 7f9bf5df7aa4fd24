#!/usr/bin/env bash
# The crash test of the store's rare moments (tests/it/rare_moments.rs) for many kill cycles: the
# real binary with the small test marks (ONCELEDGER_FAULT_MARKS), SIGKILLed under a concurrent
# load CYCLES times, checked after every kill. Prints the test's figures (the closing
# "rare moments figures:" line): cycles, keys and charges, the moments crossed, each recovery's
# work and the slowest restart.
#
#   scripts/crash/cycles.sh            # 100 kill cycles
#   scripts/crash/cycles.sh 300        # 300
#   SEED=123 scripts/crash/cycles.sh   # replay a run's kill depths and workload
#
# The test binary is built with the fault-injection feature (the root package's dev-dependencies);
# the release binary that `cargo build --release` makes has no marks to move.
set -euo pipefail
cd "$(dirname "$0")/../.."

cycles="${1:-100}"
export ONCELEDGER_CRASH_CYCLES="$cycles"
if [ -n "${SEED:-}" ]; then
  export ONCELEDGER_CRASH_SEED="$SEED"
fi
started=$(date +%s)
cargo test --release --locked --test it rare_moments -- --nocapture --test-threads=1
echo "rare moments: $cycles kill cycles in $(( $(date +%s) - started )) s (build included)"
