#!/usr/bin/env python3
"""A full disk under the running daemon, during decisions and dispatch.

The state directory (cadence.db and its WAL) is a small tmpfs mounted for
the test; the file channel writes its touches elsewhere. Touches are
decided and going out at a limited rate when the tmpfs is filled to the
last byte. Then: an import is refused with an error that says the disk is
full, and keeps nothing half-written; the daemon keeps answering queries;
nothing already decided is lost. Events sent one per request, pipelined
(they share one commit per loop turn), are each answered with an error or
kept: an "ok" is never lost. When space is freed the dispatcher resumes by
itself, the operator repeats the refused import and the refused events, and
every touch is delivered exactly once.

Mounting needs root and a kernel that lets this process mount; otherwise
the test is skipped with that reason (the store's own size cap covers the
same code paths in tests/unit/test_fault_store.c).
"""

import errno
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402

WAVE1 = 30
WAVE2 = 10
WAVE3 = 10  # one event.add request each, pipelined

CONFIG = """\
store = {{ state_dir = "{state}"; sync = "full"; }};
control = {{ socket = "{socket}"; }};
log = {{ level = "info"; }};
engine = {{ shutdown_timeout = "5s"; }};
channels = (
  {{ name = "email"; plugin = "file"; address = "email"; rate = 10.0; burst = 1;
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


def customer(i):
    return "cust-%03d" % i


def invoice_lines(first, count):
    return [json.dumps({"id": customer(i) + "-inv", "customer": customer(i),
                        "type": "invoice_issued", "at": "now-1m"})
            for i in range(first, first + count)]


class FullDisk(h.DaemonTestCase):
    def setUp(self):
        super().setUp()
        if not h.plugins_built("file"):
            self.fail("the file plugin must be built (run through CTest)")
        self.state = self.tmp.join("state")
        os.mkdir(self.state)
        self.mounted = False
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                            self.state], capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("cannot mount a tmpfs here: " + r.stderr.strip())
        self.mounted = True
        self.filler = os.path.join(self.state, "filler")
        self.out = self.tmp.join("out")
        self.config = self.tmp.join("cadenced.conf")
        h.write_text(self.config, CONFIG.format(state=self.state,
                                                socket=self.tmp.join("control.sock"),
                                                out=self.out))
        rows = {"customers": [], "contacts": []}
        for i in range(WAVE1 + WAVE2 + WAVE3):
            rows["customers"].append({"id": customer(i), "name": "Customer %d" % i,
                                      "stage": "active", "timezone": "Europe/Berlin"})
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

    def tearDown(self):
        for d in self.daemons:
            d.kill()
        if self.mounted:
            subprocess.run(["umount", "-l", self.state], capture_output=True)
        super().tearDown()

    def fill_disk(self):
        """Writes a file until the tmpfs has not one byte left."""
        with open(self.filler, "wb", buffering=0) as f:
            block = b"\0" * 65536
            try:
                while True:
                    f.write(block)
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)
            try:
                while True:
                    f.write(b"\0")
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)

    def call(self, d, req):
        c = d.connect()
        try:
            return c.call(req)
        finally:
            c.close()

    def import_events(self, d, lines):
        return self.call(d, {"cmd": "import", "kind": "events", "format": "jsonl",
                             "source": "invoices.jsonl", "lines": lines})

    def add_events_pipelined(self, d, first, count, clients=1):
        """Sends `count` event.add requests in one write on each of `clients`
        connections (the same events: the later ones find the earlier ones'
        rows, committed or not); returns the replies by customer, a list per
        customer."""
        conns = [d.connect() for _ in range(clients)]
        try:
            reqs = [{"cmd": "event.add", "id": customer(i), "event": json.loads(line)}
                    for i, line in zip(range(first, first + count), invoice_lines(first, count))]
            data = "".join(json.dumps(r) + "\n" for r in reqs).encode()
            for c in conns:
                c.send_raw(data)
            replies = {}
            for c in conns:
                for _ in range(count):
                    r = c.recv()
                    self.assertIsNotNone(r)
                    replies.setdefault(r["id"], []).append(r)
            return replies
        finally:
            for c in conns:
                c.close()

    def touches(self, d):
        r = self.call(d, {"cmd": "outbox.list", "limit": 1000})
        self.assertTrue(r and r.get("ok"), r)
        return r["result"]["touches"]

    def test_full_disk_refuses_new_work_loses_nothing_and_recovers(self):
        d = self.start(config=self.config, args=["--plugin-dir", h.PLUGIN_BUILD_DIR])
        r = self.import_events(d, invoice_lines(0, WAVE1))
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["result"]["accepted"], WAVE1)
        deadline = time.monotonic() + 20
        while len(self.touches(d)) < WAVE1:
            self.assertLess(time.monotonic(), deadline, d.read_log())
            time.sleep(0.1)

        # The disk fills while the first wave is going out at 10/s.
        self.fill_disk()
        r = self.import_events(d, invoice_lines(WAVE1, WAVE2))
        self.assertFalse(r["ok"], r)
        self.assertIn("full", r["error"]["message"])
        # The daemon keeps answering, and what was decided is still there.
        for _ in range(10):
            st = self.call(d, {"cmd": "status"})
            self.assertTrue(st and st.get("ok"), st)
            time.sleep(0.2)
        during = self.touches(d)
        self.assertEqual(len(during), WAVE1, "nothing of the refused import was recorded")
        self.assertIn("full", d.read_log())
        # Pipelined events while the disk is full, the same ones from two
        # clients: an error says so; an event answered "ok" (new or
        # duplicate) was kept, which the replay below checks.
        first3 = WAVE1 + WAVE2
        replies = self.add_events_pipelined(d, first3, WAVE3, clients=2)
        kept = sorted(cid for cid, rs in replies.items() if any(r["ok"] for r in rs))
        for cid, rs in replies.items():
            for r in rs:
                if not r["ok"]:
                    self.assertEqual(r["error"]["code"], "internal", r)
                    self.assertRegex(r["error"]["message"], "full|not stored", r)
        self.assertLess(len(kept), WAVE3, "a full disk refused none of the events")

        # Space again: the dispatcher resumes on its own, the operator repeats
        # the import, and every touch goes out once.
        os.unlink(self.filler)
        r = self.import_events(d, invoice_lines(WAVE1, WAVE2))
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["result"]["accepted"] + r["result"]["duplicates"], WAVE2)
        replies = self.add_events_pipelined(d, first3, WAVE3)
        for cid, (r,) in replies.items():
            self.assertTrue(r["ok"], r)
            # an event kept before is a duplicate now, a refused one is new
            self.assertEqual(r["result"]["duplicate"], cid in kept, r)
        total = WAVE1 + WAVE2 + WAVE3
        deadline = time.monotonic() + 30
        touches = []
        while time.monotonic() < deadline:
            touches = self.touches(d)
            if len(touches) == total and all(t["state"] == "delivered" for t in touches):
                break
            time.sleep(0.2)
        self.assertEqual(len(touches), total, d.read_log())
        self.assertTrue(all(t["state"] == "delivered" for t in touches),
                        [t for t in touches if t["state"] != "delivered"][:3])
        self.assertEqual(sorted(t["customer"] for t in touches),
                         [customer(i) for i in range(total)])
        self.assertEqual(len(os.listdir(self.out)), total)
        self.assertEqual(d.stop(), 0, d.read_log())


if __name__ == "__main__":
    h.main()
