#!/usr/bin/env python3
"""Another process holds SQLite's write lock under the running daemon (an
operator's `sqlite3 cadence.db` left inside BEGIN IMMEDIATE, a backup tool).

While the lock is held: an import is refused at once with an error that
says the store is locked, nothing of it is kept, and the daemon keeps
answering queries within a second even while its dispatcher has touches to
record (the daemon's writes wait 250 ms for a lock, then their module tries
again later; before, each waited 5 s and the dispatcher retried every
10 ms, so a query could wait 10 s). The worst waits are printed. When the
lock is released every touch is delivered once.
"""

import json
import os
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402

N = 20

CONFIG = """\
store = {{ state_dir = "{state}"; sync = "normal"; }};
control = {{ socket = "{socket}"; }};
log = {{ level = "info"; }};
engine = {{ shutdown_timeout = "5s"; }};
channels = (
  {{ name = "email"; plugin = "file"; address = "email"; rate = {rate}; burst = 1;
     settings = {{ directory = "{out}"; }}; }}
);
templates = (
  {{ name = "invoice"; subject = "Your invoice"; text = "Hi {{{{contact.first_name}}}}, an invoice is ready."; }}
);
policies = (
  {{ segment = "default"; min_gap = "1d"; }}
);
rules = (
  {{ name = "invoice_notice"; purpose = "transactional";
     trigger = {{ event = "invoice_issued"; after = "0s"; expires = "3d"; }};
     stages = [ "active" ]; roles = [ "billing" ]; channels = [ "email" ];
     bypass_caps = true; bypass_quiet_hours = true; template = "invoice"; }}
);
"""

# Runs in a child process: takes the write lock, says so, holds it until
# its stdin closes.
HOLDER = """\
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


def customer(i):
    return "cust-%02d" % i


class BusyStore(h.DaemonTestCase):
    def setUp(self):
        super().setUp()
        if not h.plugins_built("file"):
            self.fail("the file plugin must be built (run through CTest)")
        self.out = self.tmp.join("out")
        self.config = self.tmp.join("cadenced.conf")
        h.write_text(self.config, CONFIG.format(state=self.tmp.join("state"),
                                                socket=self.tmp.join("control.sock"),
                                                out=self.out, rate="0.0"))
        rows = {"customers": [], "contacts": []}
        for i in range(N):
            rows["customers"].append({"id": customer(i), "name": "Customer %d" % i,
                                      "stage": "active", "timezone": "Asia/Tokyo"})
            rows["contacts"].append({"id": customer(i) + "-billing", "customer": customer(i),
                                     "name": "Pat", "first_name": "Pat", "roles": ["billing"],
                                     "email": "pat@%s.example" % customer(i),
                                     "consent": {"email": {"opted_in": True, "at": "now-1d",
                                                           "source": "test"}}})
        for kind in ("customers", "contacts"):
            path = self.tmp.join(kind + ".jsonl")
            h.write_text(path, "".join(json.dumps(r) + "\n" for r in rows[kind]))
            r = subprocess.run([h.CADENCED, "--config", self.config, "--import", kind, path],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.holder = None

    def tearDown(self):
        if self.holder and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(timeout=5)
        super().tearDown()

    def call(self, d, req, timeout=20):
        c = d.connect(timeout=timeout)
        try:
            return c.call(req)
        finally:
            c.close()

    def import_invoices(self, d):
        lines = [json.dumps({"id": customer(i) + "-inv", "customer": customer(i),
                             "type": "invoice_issued", "at": "now-1m"}) for i in range(N)]
        return self.call(d, {"cmd": "import", "kind": "events", "format": "jsonl",
                             "source": "invoices.jsonl", "lines": lines})

    def test_a_writer_holding_the_lock_delays_but_loses_nothing(self):
        d = self.start(config=self.config, args=["--plugin-dir", h.PLUGIN_BUILD_DIR])
        self.holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, self.tmp.join("state", "cadence.db")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.assertEqual(self.holder.stdout.readline().strip(), "locked")

        t0 = time.monotonic()
        r = self.import_invoices(d)
        took = time.monotonic() - t0
        self.assertFalse(r["ok"], r)
        self.assertIn("locked", r["error"]["message"])
        self.assertLess(took, 1.0)
        worst = 0.0
        for _ in range(10):
            t0 = time.monotonic()
            st = self.call(d, {"cmd": "status"})
            worst = max(worst, time.monotonic() - t0)
            self.assertTrue(st and st.get("ok"), st)
            time.sleep(0.1)
        r = self.call(d, {"cmd": "outbox.list"})
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["result"]["touches"], [], "nothing of the refused import was kept")
        print("busy store: the refused import answered in %.2f s; worst status wait %.3f s"
              % (took, worst), flush=True)
        self.assertLess(worst, 1.0)

        self.holder.stdin.close()
        self.holder.wait(timeout=10)
        r = self.import_invoices(d)
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["result"]["accepted"], N)
        deadline = time.monotonic() + 30
        touches = []
        while time.monotonic() < deadline:
            touches = self.call(d, {"cmd": "outbox.list", "limit": 100})["result"]["touches"]
            if len(touches) == N and all(t["state"] == "delivered" for t in touches):
                break
            time.sleep(0.2)
        self.assertEqual(sorted(t["customer"] for t in touches), [customer(i) for i in range(N)])
        self.assertTrue(all(t["state"] == "delivered" for t in touches), d.read_log())
        self.assertEqual(len(os.listdir(self.out)), N)
        self.assertEqual(d.stop(), 0, d.read_log())


    def test_a_writer_holding_the_lock_while_touches_go_out(self):
        """The dispatcher is sending (rate-limited) when the lock is taken:
        queries keep being answered, and every touch is delivered once."""
        h.write_text(self.config, CONFIG.format(state=self.tmp.join("state"),
                                                socket=self.tmp.join("control.sock"),
                                                out=self.out, rate="4.0"))
        d = self.start(config=self.config, args=["--plugin-dir", h.PLUGIN_BUILD_DIR])
        r = self.import_invoices(d)
        self.assertTrue(r["ok"], r)
        deadline = time.monotonic() + 20
        while len(self.call(d, {"cmd": "outbox.list", "limit": 100})["result"]["touches"]) < N:
            self.assertLess(time.monotonic(), deadline, d.read_log())
            time.sleep(0.05)
        self.holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, self.tmp.join("state", "cadence.db")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.assertEqual(self.holder.stdout.readline().strip(), "locked")
        waits = []
        t_end = time.monotonic() + 8
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            st = self.call(d, {"cmd": "status"})
            waits.append(time.monotonic() - t0)
            self.assertTrue(st and st.get("ok"), st)
            time.sleep(0.05)
        waits.sort()
        print("busy store while dispatching: %d status queries over 8 s, median %.3f s, "
              "worst %.3f s" % (len(waits), waits[len(waits) // 2], waits[-1]), flush=True)
        self.holder.stdin.close()
        self.holder.wait(timeout=10)
        deadline = time.monotonic() + 40
        touches = []
        while time.monotonic() < deadline:
            touches = self.call(d, {"cmd": "outbox.list", "limit": 100})["result"]["touches"]
            if len(touches) == N and all(t["state"] == "delivered" for t in touches):
                break
            time.sleep(0.2)
        self.assertEqual(sorted(t["customer"] for t in touches), [customer(i) for i in range(N)])
        self.assertTrue(all(t["state"] == "delivered" for t in touches), d.read_log())
        self.assertEqual(len(os.listdir(self.out)), N)
        self.assertLess(waits[-1], 1.0)
        self.assertEqual(d.stop(), 0, d.read_log())


if __name__ == "__main__":
    h.main()
