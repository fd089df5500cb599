#!/usr/bin/env python3
"""Load on the control socket: 100 concurrent clients issuing queries and
imports while the daemon decides and dispatches (SPEC §6, issue 7).

The daemon runs a small playbook (an invoice notice, transactional, due at
once, delivered by the file plugin) over CUSTOMERS customers imported
beforehand. Then CLIENTS connections are opened at once; each sends
ROUNDS requests, one at a time, mixing read queries (status, customer.show,
outbox.list, why) with, for every tenth client, an import of invoice
events for a customer of its own — so decisions and dispatch run the whole
time. Every reply must be the right one: the id it answers, ok, and the
customer or counts asked about. The latency of each query (request written
to reply read) is recorded; p50, p99 and max are printed, and p99 must stay
under P99_LIMIT. At the end every imported invoice has exactly one touch,
delivered once.

Clients are asyncio streams in this one process, so the figures measure the
daemon, not thread scheduling here. Set CADENCE_LOAD_ROUNDS to change the
requests per client (default 50; 20 when CADENCE_SANITIZED is set).
"""

import asyncio
import glob
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402

CLIENTS = 100
CUSTOMERS = 500
SANITIZED = bool(os.environ.get("CADENCE_SANITIZED"))
ROUNDS = int(os.environ.get("CADENCE_LOAD_ROUNDS", "20" if SANITIZED else "50"))
P99_LIMIT = 2.0 if SANITIZED else 0.5  # seconds

CONFIG = """\
store = {{ state_dir = "{state}"; sync = "normal"; }};
control = {{ socket = "{socket}"; max_clients = 128; }};
log = {{ level = "notice"; }};
engine = {{ shutdown_timeout = "5s"; }};
channels = (
  {{ name = "email"; plugin = "file"; address = "email"; concurrency = 8;
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
    return "cust-%04d" % i


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


class ControlLoad(h.DaemonTestCase):
    def setUp(self):
        super().setUp()
        if not h.plugins_built("file"):
            self.fail("the file plugin must be built (run through CTest)")
        self.out = self.tmp.join("out")
        self.config = self.tmp.join("cadenced.conf")
        h.write_text(self.config, CONFIG.format(state=self.tmp.join("state"),
                                                socket=self.tmp.join("control.sock"),
                                                out=self.out))
        rows = {"customers": [], "contacts": []}
        for i in range(CUSTOMERS):
            cid = customer(i)
            rows["customers"].append({"id": cid, "name": "Customer %d" % i, "stage": "active",
                                      "timezone": "America/New_York"})
            rows["contacts"].append({"id": cid + "-billing", "customer": cid, "name": "Pat",
                                     "first_name": "Pat", "roles": ["billing"],
                                     "email": "pat@%s.example" % cid,
                                     "consent": {"email": {"opted_in": True, "at": "now-1d",
                                                           "source": "test"}}})
        for kind in ("customers", "contacts"):
            path = self.tmp.join(kind + ".jsonl")
            h.write_text(path, "".join(json.dumps(r) + "\n" for r in rows[kind]))
            r = subprocess.run([h.CADENCED, "--config", self.config, "--import", kind, path],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    async def client(self, n, sock, latencies, imported, errors):
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 22)
        importer = n % 10 == 0
        try:
            for r in range(ROUNDS):
                cid = customer((n * 7 + r) % CUSTOMERS)
                rid = "%d-%d" % (n, r)
                if importer and r % 4 == 0:
                    owner = customer((n // 10) * ROUNDS + r)  # one invoice per customer
                    lines = [json.dumps({"id": "%s-inv-%d-%d" % (owner, n, r), "customer": owner,
                                         "type": "invoice_issued", "at": "now-1m"})]
                    req = {"cmd": "import", "id": rid, "kind": "events", "format": "jsonl",
                           "source": "load-%d.jsonl" % n, "lines": lines}
                    kind = "import"
                else:
                    kind = ("status", "customer.show", "outbox.list", "why")[r % 4]
                    req = {"cmd": kind, "id": rid}
                    if kind == "customer.show" or kind == "why":
                        req["customer"] = cid
                    elif kind == "outbox.list":
                        req["customer"] = cid
                        req["limit"] = 5
                t0 = time.monotonic()
                writer.write(json.dumps(req).encode() + b"\n")
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), timeout=60)
                took = time.monotonic() - t0
                if not line:
                    errors.append("client %d: connection closed at round %d" % (n, r))
                    return
                reply = json.loads(line)
                if reply.get("id") != rid or not reply.get("ok"):
                    errors.append("client %d: %s answered %s" % (n, json.dumps(req)[:200],
                                                                 json.dumps(reply)[:300]))
                    continue
                result = reply["result"]
                if kind == "import":
                    if result.get("accepted") != 1:
                        errors.append("client %d: import not accepted: %s" % (n, result))
                    else:
                        imported.append(lines[0])
                    continue
                latencies.append(took)
                if kind == "customer.show" and cid not in json.dumps(result):
                    errors.append("client %d: customer.show %s answered %s"
                                  % (n, cid, json.dumps(result)[:200]))
                if kind == "outbox.list":
                    for t in result.get("touches", []):
                        if t.get("customer") != cid:
                            errors.append("client %d: outbox.list of %s holds %s"
                                          % (n, cid, t.get("customer")))
        finally:
            writer.close()

    async def load(self, socks, latencies, imported, errors):
        await asyncio.gather(*(self.client(n, socks[n], latencies, imported, errors)
                               for n in range(CLIENTS)))

    def connect_all(self):
        """Connects every client first, with blocking connects as cadencectl
        makes them (they wait while the listen backlog is full), so that the
        load that follows is CLIENTS connections at once."""
        socks = []
        deadline = time.monotonic() + 30
        while len(socks) < CLIENTS:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.tmp.join("control.sock"))
            except BlockingIOError:  # the listen backlog is full: wait for accept()
                s.close()
                self.assertLess(time.monotonic(), deadline, "the daemon stopped accepting")
                time.sleep(0.01)
                continue
            s.setblocking(False)
            socks.append(s)
        return socks

    def test_100_clients_query_and_import_while_the_daemon_dispatches(self):
        d = self.start(config=self.config, args=["--plugin-dir", h.PLUGIN_BUILD_DIR])
        latencies, imported, errors = [], [], []
        socks = self.connect_all()
        t0 = time.monotonic()
        asyncio.run(self.load(socks, latencies, imported, errors))
        wall = time.monotonic() - t0
        self.assertEqual(errors, [], "\n".join(errors[:20]))
        self.assertEqual(len(latencies), CLIENTS * ROUNDS - len(imported))
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        print("control load: %d clients, %d queries and %d imports in %.2f s (%.0f requests/s); "
              "query latency p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (CLIENTS, len(latencies), len(imported), wall,
                 (len(latencies) + len(imported)) / wall, p50 * 1000, p99 * 1000,
                 max(latencies) * 1000), flush=True)
        self.assertLess(p99, P99_LIMIT, "p99 query latency %.3f s" % p99)

        # Every imported invoice was decided and delivered, once.
        c = d.connect()
        deadline = time.monotonic() + 60
        touches = []
        while time.monotonic() < deadline:
            r = c.call({"cmd": "outbox.list", "limit": 1000})
            self.assertTrue(r and r.get("ok"), r)
            touches = r["result"]["touches"]
            if len(touches) == len(imported) and all(t["state"] == "delivered" for t in touches):
                break
            time.sleep(0.2)
        c.close()
        self.assertEqual(len(touches), len(imported), "one touch per imported invoice")
        self.assertTrue(all(t["state"] == "delivered" for t in touches),
                        [t for t in touches if t["state"] != "delivered"][:5])
        keys = [t["idempotency_key"] for t in touches]
        self.assertEqual(len(set(keys)), len(keys))
        self.assertEqual(len(glob.glob(os.path.join(self.out, "*"))), len(imported))
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    h.main()
