#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds, one target after the other.
# Exits non-zero as soon as a target crashes; its input is then in fuzz/artifacts/<target>/.
#
#   fuzz/run-all.sh 45                        # what .ci/run does: 45 s per target
#   fuzz/run-all.sh 300                       # five minutes per target
#   TARGETS="ledger_model" fuzz/run-all.sh 60 # some targets only
#   SANITIZER=none fuzz/run-all.sh 600        # without AddressSanitizer (more executions)
#   JOBS=2 fuzz/run-all.sh 600                # more libFuzzer processes per target
#
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 lets the stable toolchain provide them.
# Seeds are read from fuzz/corpus/<target>/ (committed, small); what the fuzzer learns goes to
# fuzz/work/<target>/ (ignored), so the committed corpus only changes when someone copies an
# input into it on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:?usage: fuzz/run-all.sh SECONDS}"
targets="${TARGETS:-request_parse record_codec ledger_model replication_decode}"
jobs="${JOBS:-1}"
# cargo-fuzz's default, AddressSanitizer: onceledger forbids unsafe code, but redb, postcard and
# serde_json have some, and a memory error there is a finding too. SANITIZER=none trades that for
# more executions per second.
sanitizer="${SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

# Options that depend on the input format of each target.
target_args() {
  case "$1" in
    # Plain-text HTTP requests: the dictionary's tokens are what the parser looks for.
    request_parse) echo "-dict=fuzz/dict/http_json.dict -max_len=4096" ;;
    # 64 operations of 2 to 14 bytes (a transfer is the longest; a mix averages under 6): let the
    # inputs be that long from the start (with the store's small marks, that crosses checkpoints,
    # account flushes and key merges many times).
    ledger_model) echo "-max_len=512 -len_control=0" ;;
    # JSON batches: the dictionary has the JSON tokens and the event field names.
    replication_decode) echo "-dict=fuzz/dict/http_json.dict -max_len=8192" ;;
    *) echo "" ;;
  esac
}

for target in $targets; do
  printf '\n== %s for %ss (sanitizer: %s)\n' "$target" "$seconds" "$sanitizer"
  mkdir -p "fuzz/work/$target"
  # shellcheck disable=SC2046 # target_args is a list of options, split on purpose
  args=(-max_total_time="$seconds" -print_final_stats=1 $(target_args "$target"))
  # With -jobs libFuzzer forks workers that log to fuzz-N.log; a single run stays in-process.
  if [ "$jobs" -gt 1 ]; then
    args+=(-jobs="$jobs" -workers="$jobs")
  fi
  if ! cargo fuzz run --sanitizer="$sanitizer" "$target" \
    "fuzz/work/$target" "fuzz/corpus/$target" -- "${args[@]}"; then
    echo "$target crashed: see fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
echo "every target ran ${seconds}s without a crash"
# A plain closing line for CI: each target that ran its time without a crash counts as passed.
echo "fuzz: $(wc -w <<<"$targets") passed, 0 failed"
