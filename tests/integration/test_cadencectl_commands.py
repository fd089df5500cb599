"""Every operator command through cadencectl against a real daemon running
the example playbook on the demo data set: customers, contacts, events,
calendar, why, simulate, pause/resume, suppress, outbox, alerts, report, holdout,
plugins, metrics, per-subcommand help, and the bad inputs each refuses.
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402

DEMO = os.path.join(h.SOURCE_DIR, "etc", "demo")


class Commands(h.DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.d = self.start_example()
        for kind in ("customers", "contacts", "events"):
            r = self.ctl("import", kind, os.path.join(DEMO, kind + ".jsonl"))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(" accepted, 0 rejected", r.stdout)
        # The imported customers are handed to the scheduler shortly after.
        self.wait_for(lambda: self.json("status")["scheduler"]["evaluations"] >= 50)

    def ctl(self, *args):
        return self.d.ctl(*args)

    def json(self, *args):
        r = self.d.ctl("--json", *args)
        self.assertEqual(r.returncode, 0, "cadencectl %s: %s" % (" ".join(args), r.stderr))
        return json.loads(r.stdout)

    def fails(self, code, *args):
        r = self.d.ctl(*args)
        self.assertEqual(r.returncode, 1, "cadencectl %s: %s %s" % (" ".join(args), r.stdout,
                                                                     r.stderr))
        self.assertIn(code, r.stderr)
        return r.stderr

    def usage(self, *args):
        r = self.d.ctl(*args)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("Usage: cadencectl", r.stderr)
        return r.stderr

    def wait_for(self, cond, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return
            time.sleep(0.1)
        self.fail("condition not met within %s s" % timeout)

    # ---- customers, contacts, events ----------------------------------------

    def test_customer_add_show_update_list(self):
        r = self.ctl("customer", "add", "acme", "name=Acme Ltd", "timezone=Europe/Paris",
                     "stage=active", "segment=smb", "interests=billing,security",
                     'attributes={"plan": "team"}')
        self.assertEqual(r.returncode, 0, r.stderr)
        c = self.json("customer", "show", "acme")
        self.assertEqual(c["name"], "Acme Ltd")
        self.assertEqual(c["timezone"], "Europe/Paris")
        self.assertEqual(c["interests"], "billing,security")
        self.assertEqual(c["attributes"], {"plan": "team"})
        self.assertEqual(c["contacts"], [])
        self.fails("conflict", "customer", "add", "acme")
        self.assertEqual(self.ctl("customer", "update", "acme", "stage=at_risk").returncode, 0)
        c = self.json("customer", "show", "acme")
        self.assertEqual(c["stage"], "at_risk")
        self.assertEqual(c["name"], "Acme Ltd")  # untouched fields are kept
        # tables line up by characters, not bytes
        r = self.ctl("customer", "add", "zo\u00eb", "name=Zo\u00eb M\u00fcller GmbH",
                     "stage=onboarding")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = self.ctl("customer", "list", "--limit", "1000").stdout.splitlines()
        col = lines[0].index("STAGE")
        for line in lines[1:]:
            if line.startswith(("acme ", "zo\u00eb ")):
                self.assertIn(line[col:].split()[0], ("at_risk", "onboarding"), lines)
        shown = self.ctl("customer", "show", "acme").stdout  # times readable, in UTC
        self.assertRegex(shown, r"created_at\W+\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")
        listed = self.json("customer", "list", "--stage", "at_risk", "--limit", "1000")
        self.assertIn("acme", [x["id"] for x in listed["customers"]])
        self.assertTrue(all(x["stage"] == "at_risk" for x in listed["customers"]))
        smb = self.json("customer", "list", "--segment", "smb", "--limit", "2")
        self.assertEqual(len(smb["customers"]), 2)
        self.assertTrue(smb["more"])
        table = self.ctl("customer", "list", "--stage", "at_risk").stdout
        self.assertIn("acme", table)
        self.assertIn("NEXT EVALUATION", table)

    def test_customer_bad_input(self):
        self.fails("not_found", "customer", "update", "no-such-customer", "stage=active")
        self.fails("not_found", "customer", "show", "no-such-customer")
        err = self.fails("bad_request", "customer", "add", "x1", "stage=gold")
        self.assertIn("stage", err)
        err = self.fails("bad_request", "customer", "add", "x2", "timezone=Mars/Olympus")
        self.assertIn("timezone", err)
        err = self.fails("bad_request", "customer", "add", "x3", "colour=blue")
        self.assertIn("colour", err)
        self.fails("bad_request", "customer", "list", "--stage", "gold")
        self.usage("customer", "add", "x4", "name")  # not FIELD=VALUE
        # a long UTF-8 id is refused with a message that quotes whole characters
        err = self.fails("bad_request", "customer", "add", "\u65e5" * 50)
        self.assertIn("'" + "\u65e5" * 13 + "...': id longer than 128 bytes", err)
        self.usage("customer", "frobnicate")
        self.usage("customer", "list", "--limit", "ten")
        # nothing of the refused customers was stored
        self.fails("not_found", "customer", "show", "x1")

    def test_contact_add_update_consent(self):
        self.assertEqual(self.ctl("customer", "add", "globex", "stage=active").returncode, 0)
        r = self.ctl("contact", "add", "globex-dm", "globex", "name=Hank Scorpio",
                     "roles=decision_maker", "email=hank@globex.example")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.fails("conflict", "contact", "add", "globex-dm", "globex")
        self.assertEqual(self.ctl("contact", "update", "globex-dm", "phone=+12125550199")
                         .returncode, 0)
        r = self.ctl("contact", "consent", "globex-dm", "email", "in", "--source", "call")
        self.assertEqual(r.returncode, 0, r.stderr)
        c = self.json("customer", "show", "globex")["contacts"][0]
        self.assertEqual(c["phone"], "+12125550199")
        self.assertEqual(c["email"], "hank@globex.example")
        self.assertIs(c["consent"]["email"], True)
        self.assertIsNone(c["consent"]["sms"])
        self.assertEqual(self.ctl("contact", "consent", "globex-dm", "email", "out").returncode, 0)
        self.assertIs(self.json("customer", "show", "globex")["contacts"][0]["consent"]["email"],
                      False)
        self.fails("not_found", "contact", "add", "c9", "no-such-customer")
        self.fails("not_found", "contact", "update", "no-such-contact", "name=X")
        self.fails("not_found", "contact", "consent", "no-such-contact", "email", "in")
        self.fails("bad_request", "contact", "consent", "globex-dm", "fax", "in")
        err = self.fails("bad_request", "contact", "add", "c10", "globex", "roles=janitor")
        self.assertIn("roles", err)
        self.fails("bad_request", "contact", "add", "c11", "globex", "phone=12345")
        self.usage("contact", "consent", "globex-dm", "email", "maybe")

    def test_contact_address_removed_with_an_empty_value(self):
        self.assertEqual(self.ctl("customer", "add", "initech", "stage=active").returncode, 0)
        r = self.ctl("contact", "add", "initech-bl", "initech", "roles=billing",
                     "email=Bill@Initech.example", "phone=+12125550177")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.ctl("contact", "update", "initech-bl", "phone=")
        self.assertEqual(r.returncode, 0, r.stderr)
        c = self.json("customer", "show", "initech")["contacts"][0]
        self.assertEqual((c["email"], c["phone"]), ("bill@initech.example", ""))
        # a consent for the address being removed refuses the whole change
        err = self.fails("bad_request", "contact", "update", "initech-bl", "email=",
                         'consent={"email": {"opted_in": true}}')
        self.assertIn("consent.email: given without an email address", err)
        self.assertEqual(self.json("customer", "show", "initech")["contacts"][0]["email"],
                         "bill@initech.example")
        self.assertEqual(self.ctl("contact", "update", "initech-bl", "email=").returncode, 0)
        c = self.json("customer", "show", "initech")["contacts"][0]
        self.assertEqual((c["email"], c["phone"]), ("", ""))

    def test_suppression_list_add_list_remove(self):
        r = self.ctl("suppress", "add", "MAILTO:Hank@Globex.example", "--reason", "asked by phone")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("hank@globex.example is suppressed", r.stdout)
        self.assertEqual(self.ctl("suppress", "add", "+12125550199").returncode, 0)
        rows = self.json("suppress", "list")["suppressions"]
        self.assertEqual(sorted((x["address"], x["reason"]) for x in rows),
                         [("+12125550199", "operator"), ("hank@globex.example", "asked by phone")])
        r = self.ctl("suppress", "list")
        self.assertRegex(r.stdout, r"^ADDRESS +SINCE \(UTC\) +REASON\n")
        self.assertIn("hank@globex.example", r.stdout)
        self.assertIn("asked by phone", r.stdout)
        self.assertEqual(self.ctl("suppress", "remove", "HANK@globex.example").returncode, 0)
        self.assertEqual([x["address"] for x in self.json("suppress", "list")["suppressions"]],
                         ["+12125550199"])
        err = self.fails("not_found", "suppress", "remove", "hank@globex.example")
        self.assertIn("'hank@globex.example' is not on the list", err)
        err = self.fails("bad_request", "suppress", "add", "12125550199")
        self.assertIn("neither an email address nor an E.164 number", err)
        self.fails("bad_request", "suppress", "add", "two@@example.com")
        err = self.fails("bad_request", "suppress", "add", "x" * 300 + "@example.com")
        self.assertIn("at most 254 bytes, not 312", err)
        err = self.fails("bad_request", "suppress", "add", "a@example.com", "--reason", "one\ntwo")
        self.assertIn("field reason: one line", err)
        self.usage("suppress", "forget", "x@example.com")

    def test_event_add_evaluates_the_customer_and_is_idempotent(self):
        self.assertEqual(self.ctl("customer", "add", "initech", "stage=onboarding").returncode, 0)
        self.assertEqual(self.ctl("contact", "add", "initech-u", "initech", "roles=user",
                                  "email=peter@initech.example").returncode, 0)
        before = self.json("status")["scheduler"]["evaluations"]
        r = self.json("event", "add", "initech-p1", "initech", "purchase", "at=now-1h",
                      'data={"plan": "team"}')
        self.assertIs(r["duplicate"], False)
        self.wait_for(lambda: self.json("status")["scheduler"]["evaluations"] > before)
        self.wait_for(lambda: self.json("why", "initech")["decisions"])
        again = self.json("event", "add", "initech-p1", "initech", "purchase")
        self.assertIs(again["duplicate"], True)
        self.fails("not_found", "event", "add", "e2", "no-such-customer", "purchase")
        err = self.fails("bad_request", "event", "add", "e3", "initech", "teleported")
        self.assertIn("type", err)
        err = self.fails("bad_request", "event", "add", "e4", "initech", "purchase", "at=yesterday")
        self.assertIn("at", err)
        self.usage("event", "add", "e5", "initech")

    def test_event_add_pipelined_replies_in_order_and_kept_once_answered(self):
        """Two clients each write many event.add requests at once (they share
        one commit per loop turn); each gets its replies in order, and what
        was answered "ok" survives a kill -9 right after the replies."""
        with open(os.path.join(DEMO, "customers.jsonl")) as f:
            ids = [json.loads(line)["id"] for line in f if line.strip()]
        batches = []
        for client in range(2):
            reqs = []
            for n, cid in enumerate(ids):
                eid = "pipe-%d-%s" % (client, cid)
                reqs.append(({"cmd": "event.add", "id": [client, n, "ok"],
                              "event": {"id": eid, "customer": cid, "type": "purchase",
                                        "at": "now-1m"}}, "ok"))
                if n % 5 == 0:
                    reqs.append(({"cmd": "event.add", "id": [client, n, "bad"],
                                  "event": {"id": eid + "-x", "customer": cid,
                                            "type": "teleported", "at": "now"}}, "bad_request"))
                    reqs.append(({"cmd": "status", "id": [client, n, "read"]}, "ok"))
                    reqs.append(({"cmd": "event.add", "id": [client, n, "dup"],
                                  "event": {"id": eid, "customer": cid, "type": "purchase",
                                            "at": "now-1m"}}, "duplicate"))
            batches.append(reqs)
        conns = [self.d.connect() for _ in batches]
        for c, reqs in zip(conns, batches):
            c.send_raw("".join(json.dumps(r) + "\n" for r, _ in reqs).encode())
        for c, reqs in zip(conns, batches):
            for req, want in reqs:
                r = c.recv()
                self.assertEqual(r["id"], req["id"])
                if want == "bad_request":
                    self.assertEqual(r["error"]["code"], "bad_request", r)
                    continue
                self.assertTrue(r["ok"], r)
                if req["cmd"] == "event.add":
                    self.assertIs(r["result"]["duplicate"], want == "duplicate", r)
            c.close()
        # Every answered event was committed before its reply.
        self.d.kill()
        self.d = self.start_example()
        c = self.d.connect()
        for reqs in batches:
            for req, want in reqs:
                if req["cmd"] == "event.add" and want == "ok":
                    r = c.call(req)
                    self.assertTrue(r["ok"], r)
                    self.assertIs(r["result"]["duplicate"], True, r)
        c.close()

    def test_event_add_pipelined_by_a_client_reading_as_it_goes(self):
        """A producer writes a large burst of event.add requests at once, one
        in five a status request (a reply of more than a KiB), and reads the
        replies on another thread: it is slowed to its reading pace, never
        dropped, and gets every reply in order."""
        n = 4000 if os.environ.get("CADENCE_SANITIZED") else 20000
        with open(os.path.join(DEMO, "customers.jsonl")) as f:
            ids = [json.loads(line)["id"] for line in f if line.strip()]
        data = "".join(json.dumps({"cmd": "status", "id": i} if i % 5 == 4 else
                                  {"cmd": "event.add", "id": i,
                                   "event": {"id": "burst-%d" % i, "customer": ids[i % len(ids)],
                                             "type": "purchase", "at": "now-1m"}}) + "\n"
                       for i in range(n)).encode()
        c = self.d.connect(timeout=60)
        sender = threading.Thread(target=c.send_raw, args=(data,))
        sender.start()
        for i in range(n):
            r = c.recv()
            self.assertIsNotNone(r, "disconnected after %d replies" % i)
            self.assertEqual(r["id"], i)
            self.assertTrue(r["ok"], r)
            if i % 5 != 4:
                self.assertIs(r["result"]["duplicate"], False)
        sender.join(60)
        c.close()
        self.assertNotIn("does not read its replies", self.d.read_log())

    # ---- calendar, why, simulate ------------------------------------------------

    def test_calendar_who_is_next_and_why(self):
        cal = self.json("calendar", "--limit", "5")["entries"]
        self.assertTrue(0 < len(cal) <= 5)
        dues = [e["due"] for e in cal]
        self.assertEqual(dues, sorted(dues))
        for e in cal:
            self.assertTrue(e["why"], e)
            self.assertTrue(e["due_local"], e)
        one = self.json("calendar", "--customer", cal[0]["customer"])["entries"]
        self.assertEqual([e["customer"] for e in one], [cal[0]["customer"]])
        rule = next((e["rule"] for e in cal if e["rule"]), None)
        if rule:
            by_rule = self.json("calendar", "--rule", rule, "--limit", "100")["entries"]
            self.assertTrue(by_rule)
            self.assertTrue(all(e["rule"] == rule for e in by_rule))
            self.assertTrue(all(e["verdict"] in ("wait", "defer") for e in by_rule))
        self.fails("not_found", "calendar", "--rule", "no_such_rule")
        self.fails("not_found", "calendar", "--customer", "no-such-customer")
        self.fails("bad_request", "calendar", "--limit", "0")
        table = self.ctl("calendar", "--limit", "3").stdout
        self.assertIn("DUE (CUSTOMER'S TIME)", table)

    def test_why_explains_in_sentences(self):
        cust = self.json("calendar", "--limit", "1")["entries"][0]["customer"]
        w = self.json("why", cust)
        self.assertTrue(w["summary"])
        self.assertTrue(w["decisions"])
        for d in w["decisions"]:
            self.assertIn(d["verdict"], ("send", "wait", "defer", "suppress"))
            self.assertTrue(d["text"].startswith(d["rule"] + ": "), d)
            self.assertIn(w["timezone"], d["at_local"])
        text = self.ctl("why", cust).stdout
        self.assertIn("newest first", text)
        self.assertIn(w["decisions"][0]["sentence"], text)
        self.fails("not_found", "why", "no-such-customer")
        self.usage("why")

    def test_simulate_streams_a_forecast(self):
        r = self.ctl("simulate", "--days", "14")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.strip())
        cust = self.json("calendar", "--limit", "1")["entries"][0]["customer"]
        r = self.ctl("simulate", "--days", "30", "--customer", cust)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [json.loads(x) for x in self.ctl("--json", "simulate", "--days", "7")
                 .stdout.splitlines() if x.strip()]
        self.assertTrue(lines)
        self.fails("bad_request", "simulate", "--days", "0")
        self.fails("bad_request", "simulate", "--days", "5000")
        self.fails("not_found", "simulate", "--days", "3", "--customer", "no-such-customer")
        self.usage("simulate")
        # the forecast sent nothing and left the daemon's counters alone
        self.assertEqual(self.json("status")["state"], "running")

    # ---- pause, outbox ------------------------------------------------------------

    def test_pause_and_resume(self):
        cust = self.json("customer", "list", "--stage", "active", "--limit", "1")["customers"][0]
        cid = cust["id"]
        self.assertEqual(self.ctl("pause", cid).returncode, 0)
        self.assertIs(self.json("customer", "show", cid)["paused"], True)
        self.wait_for(lambda: "paused" in self.json("why", cid)["summary"])
        self.assertEqual(self.ctl("resume", cid).returncode, 0)
        self.assertIs(self.json("customer", "show", cid)["paused"], False)
        self.fails("not_found", "pause", "no-such-customer")
        self.usage("pause")

    def test_outbox_list_cancel_retry(self):
        touches = self.json("outbox", "list", "--limit", "500")["touches"]
        self.assertTrue(touches, "the demo decides touches")
        for t in touches:
            self.assertTrue(t["idempotency_key"].startswith(t["customer"] + "/"))
        cancellable = [t for t in touches if t["state"] in ("queued", "retry_wait", "dead")]
        if cancellable:
            key = str(cancellable[0]["key"])
            r = self.ctl("outbox", "cancel", key)
            if r.returncode == 0:  # (it may have gone out in the meantime)
                states = {t["key"]: t["state"] for t in
                          self.json("outbox", "list", "--state", "cancelled")["touches"]}
                self.assertEqual(states.get(int(key)), "cancelled")
                err = self.fails("bad_request", "outbox", "cancel", key)
                self.assertIn("cancelled", err)
                self.fails("bad_request", "outbox", "retry", key)
        for t in self.json("outbox", "list", "--state", "delivered")["touches"]:
            self.assertEqual(t["state"], "delivered")
        one = touches[0]["customer"]
        self.assertTrue(all(t["customer"] == one for t in
                            self.json("outbox", "list", "--customer", one)["touches"]))
        self.fails("bad_request", "outbox", "list", "--state", "lost")
        self.fails("not_found", "outbox", "list", "--customer", "no-such-customer")
        self.fails("not_found", "outbox", "retry", "999999999")
        self.fails("bad_request", "outbox", "cancel", "abc")
        self.fails("bad_request", "outbox", "retry", "99999999999999999999999")
        self.usage("outbox", "retry")

    # ---- alerts, report, holdout, plugins, metrics ----------------------------------

    def test_alerts(self):
        a = self.json("alerts")
        for k in ("content_gap", "loop_overdue", "silent", "dead_touches", "circuits"):
            self.assertIn(k, a["open"])
        self.assertTrue(all(x["open"] for x in a["alerts"]))
        self.assertIn("content gaps", self.ctl("alerts").stdout)
        self.assertGreaterEqual(len(self.json("alerts", "--all")["alerts"]), len(a["alerts"]))

    def test_report_shows_expected_vs_executed(self):
        rep = self.json("report", "--since", "now-7d")
        names = [r["rule"] for r in rep["rules"]]
        self.assertIn("welcome_guide", names)  # every playbook rule has a line
        self.assertIn("win_back", names)
        for r in rep["rules"]:
            self.assertEqual(r["expected"], r["sent"] + r["suppressed"])
            self.assertEqual(r["sent"], r["delivered"] + r["failed"] + r["pending"])
            self.assertEqual(r["suppressed"], sum(r["suppressed_by"].values()))
            if r["expected"]:
                self.assertAlmostEqual(r["executed_pct"], 100.0 * r["executed"] / r["expected"],
                                       delta=0.06)
        self.assertGreater(rep["totals"]["eligible"], 0)
        self.assertIn("count", rep["silent"])
        text = self.ctl("report").stdout
        self.assertIn("EXPECTED", text)
        self.assertIn("give/ask", text)
        self.fails("bad_request", "report", "--since", "tomorrow")
        self.fails("bad_request", "report", "--since", "now", "--until", "now-1d")
        self.usage("report", "--weekly")

    def test_holdout_lists_configured_rules(self):
        h_ = self.json("holdout")
        rules = {r["rule"]: r for r in h_["rules"]}
        self.assertIn("win_back", rules)  # the example holds 5% of win-back out
        self.assertAlmostEqual(rules["win_back"]["holdout_pct"], 5.0)
        for g in ("treated", "held_out"):
            self.assertIn("churned", rules["win_back"][g])
            self.assertIn("reactivated", rules["win_back"][g])
        self.assertIn("win_back", self.ctl("holdout").stdout)

    def test_plugins(self):
        p = self.json("plugins")
        channels = [x["channel"] for x in p["plugins"]]
        self.assertIn("email", channels)
        if h.plugins_built("file"):
            email = next(x for x in p["plugins"] if x["channel"] == "email")
            self.assertIs(email["loaded"], True, email)
        self.assertIn("CHANNEL", self.ctl("plugins").stdout)

    def test_metrics_are_prometheus_text(self):
        text = self.ctl("metrics").stdout
        self.assertIn("# TYPE cadence_touches gauge", text)
        self.assertIn('cadence_verdicts_total{verdict="send"}', text)
        self.assertIn("cadence_queue_depth ", text)
        self.assertIn('cadence_alerts_open{kind="content_gap"}', text)
        self.assertIn('cadence_delivery_latency_seconds_bucket{le="+Inf"}', text)
        self.assertIn('cadence_store_checkpoints_total{where="commit",result="busy"}', text)
        self.assertIn("# TYPE cadence_store_wal_frames gauge", text)
        self.assertIn("cadence_store_wal_checkpointed_frames ", text)
        for line in text.splitlines():
            if line.startswith("#"):
                self.assertRegex(line, r"^# (HELP|TYPE) [a-z_]+ ")
            else:
                name, value = line.rsplit(" ", 1)
                float(value)
                self.assertRegex(name, r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})?$')

    # ---- help and raw protocol ----------------------------------------------------

    def test_help_per_subcommand(self):
        r = h.run_ctl(["--help"])
        for sub in ("customer", "contact", "event", "import", "calendar", "why", "simulate",
                    "pause", "resume", "outbox", "alerts", "report", "holdout", "plugins",
                    "metrics"):
            self.assertIn("  " + sub, r.stdout)
            one = h.run_ctl(["help", sub])
            self.assertEqual(one.returncode, 0)
            self.assertIn("Usage: cadencectl", one.stdout)
            self.assertEqual(h.run_ctl([sub, "--help"]).stdout, one.stdout)
        # the longest usage texts are printed whole
        self.assertIn("dead since TIME) again\n", h.run_ctl(["help", "outbox"]).stdout)
        self.assertIn("email= or phone= (empty) removes that address\n",
                      h.run_ctl(["help", "contact"]).stdout)

    def test_raw_requests_with_bad_fields(self):
        c = self.d.connect()
        try:
            bad = [
                ({"cmd": "calendar", "limt": 3}, "bad_request", "limt"),
                ({"cmd": "calendar", "limit": "3"}, "bad_request", "limit"),
                ({"cmd": "why"}, "bad_request", "customer"),
                ({"cmd": "why", "customer": 42}, "bad_request", "customer"),
                ({"cmd": "customer.add", "customer": "acme"}, "bad_request", "customer"),
                ({"cmd": "customer.add", "customer": {"name": "no id"}}, "bad_request", "id"),
                ({"cmd": "customer.add", "customer": {"id": "a", "stage": 3}}, "bad_request",
                 "stage"),
                ({"cmd": "event.add", "event": {"id": "e", "customer": "nobody",
                                                "type": "purchase"}}, "not_found", "nobody"),
                ({"cmd": "outbox.retry", "key": -1}, "bad_request", "key"),
                ({"cmd": "report", "since": [1]}, "bad_request", "since"),
                ({"cmd": "simulate.output", "job": 999}, "not_found", "999"),
                ({"cmd": "metrics", "format": "json"}, "bad_request", "format"),
            ]
            for i, (req, code, word) in enumerate(bad):
                req["id"] = i
                reply = c.call(req)
                self.assertIs(reply["ok"], False, reply)
                self.assertEqual(reply["id"], i)
                self.assertEqual(reply["error"]["code"], code, reply)
                self.assertIn(word, reply["error"]["message"])
            c.send_raw(b'{"cmd": "calendar", "limit": \n')
            self.assertEqual(c.recv()["error"]["code"], "bad_json")
            self.assertIs(c.call({"cmd": "calendar", "limit": 1})["ok"], True)
        finally:
            c.close()


if __name__ == "__main__":
    h.main()
