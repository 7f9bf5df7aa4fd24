#!/usr/bin/env python3
"""Waits until a hub applied every event of one origin; prints progress and the rate.

Usage: wait-applied.py HUB_ADDR NODE_ID LAST_SEQ START_EPOCH_SECONDS LABEL
Exit 0 when the hub's applied_through reaches LAST_SEQ within 15 minutes, 1 otherwise."""
import json
import sys
import time
import urllib.request

addr, node, last, start, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
deadline = time.time() + 900
applied, shown = 0, time.time()
while applied < last and time.time() < deadline:
    try:
        with urllib.request.urlopen(f"http://{addr}/v1/replication/origins", timeout=5) as r:
            origins = json.load(r)["origins"]
        applied = next((o["applied_through"] for o in origins if o["node"] == node), 0)
    except OSError:
        pass
    if time.time() - shown >= 1:
        print(f"  applied {applied}/{last}", flush=True)
        shown = time.time()
    time.sleep(0.02)
elapsed = time.time() - start
print(f"== {applied} events {label} in {elapsed:.2f} s (server starts included): {applied / elapsed:,.0f} events/s")
sys.exit(0 if applied >= last else 1)
