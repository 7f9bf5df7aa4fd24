#!/usr/bin/env python3
# inplace-vs-append.py [DIR]: one 524-byte record + fdatasync, 500 times, written in place into a
# zero-filled 8 MiB file and then appended past its end; prints the device bytes per sync
# (/proc/diskstats of vda, whole machine) and the mean time. Why the journal is preallocated.
import os, time
def sectors():
    for l in open('/proc/diskstats'):
        f=l.split()
        if f[2]=='vda': return int(f[9])
import sys
d=sys.argv[1] if len(sys.argv) > 1 else '/tmp/perf'
os.makedirs(d, exist_ok=True)
p=d + '/inplace-vs-append.bin'
fd=os.open(p, os.O_RDWR|os.O_CREAT|os.O_TRUNC, 0o644)
os.pwrite(fd, b'\0'*(8<<20), 0); os.fdatasync(fd)
for label, fn in [('in-place', lambda i: os.pwrite(fd, b'x'*524, 1862+i*600)), ('append', lambda i: os.pwrite(fd, b'x'*524, (8<<20)+i*600))]:
    s0=sectors(); t0=time.time()
    for i in range(500):
        fn(i); os.fdatasync(fd)
    print(label, (sectors()-s0)*512/500, 'disk bytes/sync', (time.time()-t0)/500*1e6, 'us/sync')
os.close(fd)
os.remove(p)
