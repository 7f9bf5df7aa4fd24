#!/usr/bin/env bash
# fprobe.sh: mean time of one durable 8 KiB write (100 x O_DSYNC) in $PERF_DIR, plus the load
# average. Every benchmark here is fsync-bound: run it before each measurement.
PERF_DIR=${PERF_DIR:-/tmp/perf}
mkdir -p "$PERF_DIR"
s=$(date +%s.%N)
dd if=/dev/zero of="$PERF_DIR/fsync.test" bs=8k count=100 oflag=dsync 2>/dev/null
e=$(date +%s.%N)
rm -f "$PERF_DIR/fsync.test"
echo "fsync8k=$(echo "($e - $s)*10" | bc -l | cut -c1-5)ms load=$(cut -d' ' -f1 /proc/loadavg)"
