#!/usr/bin/env python3
"""Cold start of the real daemon over N synthetic customers.

    bench/cold_start.py BUILD_DIR [CUSTOMERS]

Generates CUSTOMERS customers (default 1,000,000) with bench_scale into a
temporary state directory, then starts `cadenced` on it with a NOTIFY_SOCKET
listener and prints the time from exec to READY=1 (store open, in-flight
touches requeued, calendar rebuilt, socket bound) and the daemon's resident
memory at that moment. Prints figures; asserts nothing.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

build = sys.argv[1] if len(sys.argv) > 1 else "build/normal"
customers = int(sys.argv[2]) if len(sys.argv) > 2 else 1000000
source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tmp = tempfile.mkdtemp(prefix="cadence-cold-")
try:
    subprocess.run([os.path.join(build, "bench", "bench_scale"), "--customers", str(customers),
                    "--sim-customers", "0", "--dir", tmp], check=True)
    os.rename(os.path.join(tmp, "scale.db"), os.path.join(tmp, "cadence.db"))
    notify = os.path.join(tmp, "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify)
    listener.settimeout(120)
    env = dict(os.environ, NOTIFY_SOCKET=notify)
    started = time.monotonic()
    daemon = subprocess.Popen([os.path.join(build, "cadenced"), "--config",
                               os.path.join(source, "etc", "cadenced.conf"), "--state-dir", tmp,
                               "--socket", os.path.join(tmp, "control.sock"), "--plugin-dir",
                               os.path.join(build, "plugins"), "--log-level", "err"], env=env)
    try:
        while True:
            msg = listener.recv(4096).decode()
            if "READY=1" in msg.split("\n"):
                break
        ready = time.monotonic() - started
        rss = 0
        with open("/proc/%d/status" % daemon.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        print("cold start: %d customers, exec to READY=1 in %.2f s (target <= 3 s), RSS %.1f MiB"
              % (customers, ready, rss / 1024.0))
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
finally:
    shutil.rmtree(tmp, ignore_errors=True)
