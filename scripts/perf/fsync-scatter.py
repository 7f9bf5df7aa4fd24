#!/usr/bin/env python3
"""fsync-scatter.py [DIR]: what one fdatasync costs on this disk, by the number of 4 KiB pages
written before it and whether they are contiguous, scattered (random offsets in a written 64 MiB
file) or fresh (appended into a never-written, sparse range: new blocks to allocate).
A redb commit writes its pages where its allocator puts them, mostly scattered: this shows
what that costs against the same pages in a run.
  python3 scripts/perf/fsync-scatter.py /tmp/perf
"""
import os
import random
import sys
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "/tmp/perf"
SIZE = 64 << 20
PAGE = 4096
ROUNDS = 1000


def probe(pages, placement):
    path = os.path.join(DIR, "fsync-scatter.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if placement == "fresh":
            os.ftruncate(fd, SIZE)
        else:
            zeros = b"\0" * (1 << 20)
            for mib in range(SIZE >> 20):
                os.pwrite(fd, zeros, mib << 20)
            os.fdatasync(fd)
        page = os.urandom(PAGE)
        times = []
        next_page = 0
        for _ in range(ROUNDS):
            for _ in range(pages):
                if placement == "scattered":
                    offset = random.randrange(SIZE // PAGE) * PAGE
                else:
                    offset = next_page * PAGE
                    next_page = (next_page + 1) % (SIZE // PAGE)
                os.pwrite(fd, page, offset)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
        times.sort()
        return times[len(times) // 2] * 1e6, times[int(len(times) * 0.9)] * 1e6
    finally:
        os.close(fd)
        os.unlink(path)


print(f"{'pages':>5} {'placement':>10} {'p50 us':>8} {'p90 us':>8}")
for pages in (1, 4, 9, 18):
    for placement in ("contiguous", "scattered", "fresh"):
        p50, p90 = probe(pages, placement)
        print(f"{pages:>5} {placement:>10} {p50:>8.0f} {p90:>8.0f}", flush=True)
