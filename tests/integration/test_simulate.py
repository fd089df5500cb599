"""cadenced --simulate: the forecast over the shipped demo data and example playbook.

Loads etc/demo/ into a fresh store with `cadenced --import`, runs the same
engine with a virtual clock for 90 days, and checks the promises of the
forecast: every rule of the example playbook shows up as sent or refused with
its reason, the seed stories hold (no survey to a former customer, nothing
to a paused one, SMS only in its local window), and the live store is never
written.
"""

import datetime
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cadence_harness import CADENCED, SOURCE_DIR  # noqa: E402

try:
    from zoneinfo import ZoneInfo
except ImportError:  # pragma: no cover
    ZoneInfo = None

CONF = os.path.join(SOURCE_DIR, "etc", "cadenced.conf")
DEMO = os.path.join(SOURCE_DIR, "etc", "demo")


def rule_names():
    text = open(CONF, encoding="utf-8").read()
    block = text[text.index("\nrules = (") :]
    return re.findall(r'^\s*name = "([a-z_]+)";', block, re.M)


def load_demo(kind):
    out = []
    with open(os.path.join(DEMO, kind + ".jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


class SimulateDemo(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cadence-sim-")
        cls.state = cls.tmp.name
        for kind in ("customers", "contacts", "events"):
            subprocess.run(
                cls.cadenced("--import", kind, os.path.join(DEMO, kind + ".jsonl")),
                check=True, capture_output=True, timeout=60)
        cls.db = os.path.join(cls.state, "cadence.db")
        cls.touches_before = cls.count_touches()
        run = subprocess.run(cls.cadenced("--simulate", "90", "--json"),
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise AssertionError("simulate failed: " + run.stderr)
        lines = [json.loads(l) for l in run.stdout.splitlines() if l.strip()]
        cls.touches = [l for l in lines if "totals" not in l]
        cls.totals = [l for l in lines if "totals" in l][-1]["totals"]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    @classmethod
    def cadenced(cls, *args):
        return [CADENCED, "--config", CONF, "--state-dir", cls.state] + list(args)

    @classmethod
    def count_touches(cls):
        con = sqlite3.connect(cls.db)
        try:
            return con.execute("SELECT count(*) FROM touches").fetchone()[0]
        finally:
            con.close()

    def test_every_rule_is_sent_or_refused_with_a_reason(self):
        by_rule = {r["rule"]: r for r in self.totals["rules"]}
        for name in rule_names():
            self.assertIn(name, by_rule, name)
            r = by_rule[name]
            shown = r["sent"] > 0 or r["dropped"] or r["suppressed"]
            self.assertTrue(shown, "rule %s neither sent nor refused: %r" % (name, r))

    def test_touch_lines_match_the_totals(self):
        self.assertEqual(len(self.touches), self.totals["touches"])
        self.assertGreater(self.totals["touches"], 0)
        for t in self.touches:
            for key in ("at", "customer", "rule", "purpose", "channel", "contact", "content"):
                self.assertIn(key, t)

    def test_no_survey_or_newsletter_reaches_a_former_customer(self):
        former = {c["id"] for c in load_demo("customers") if c["stage"] == "former"}
        self.assertTrue(former)
        for t in self.touches:
            if t["customer"] in former:
                self.assertIn(t["rule"], ("win_back", "invoice_notice"), t)

    def test_a_paused_customer_hears_nothing(self):
        paused = {c["id"] for c in load_demo("customers") if c.get("paused")}
        self.assertTrue(paused)
        for t in self.touches:
            self.assertNotIn(t["customer"], paused, t)

    def test_sms_only_between_8_and_21_local(self):
        if ZoneInfo is None:
            self.skipTest("zoneinfo not available")
        for t in self.touches:
            if t["channel"] != "sms":
                continue
            at = datetime.datetime.strptime(t["at"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.timezone.utc)
            local = at.astimezone(ZoneInfo(t["timezone"]))
            self.assertTrue(8 <= local.hour < 21, t)

    def test_each_trigger_is_touched_once(self):
        seen = set()
        for t in self.touches:
            if t["rule"] in ("top_of_mind", "usage_tips", "nps_survey", "anniversary_thanks"):
                continue  # recurring: once per period
            key = (t["customer"], t["rule"])
            self.assertNotIn(key, seen, t)
            seen.add(key)

    def test_the_live_store_is_not_written(self):
        self.assertEqual(self.count_touches(), self.touches_before)

    def test_one_customer_only(self):
        some = self.touches[0]["customer"]
        run = subprocess.run(self.cadenced("--simulate", "30", "--json", "--customer", some),
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        lines = [json.loads(l) for l in run.stdout.splitlines() if l.strip()]
        for l in lines:
            if "totals" in l:
                self.assertEqual(l["totals"]["customers"], 1)
            else:
                self.assertEqual(l["customer"], some)

    def test_bad_arguments_are_refused_clearly(self):
        run = subprocess.run(self.cadenced("--simulate", "0"), capture_output=True, text=True,
                             timeout=30)
        self.assertEqual(run.returncode, 2)
        self.assertIn("1 to 3650", run.stderr)
        run = subprocess.run(self.cadenced("--simulate", "10", "--customer", "no-such-customer"),
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 1)
        self.assertIn("no-such-customer", run.stderr)
        run = subprocess.run(self.cadenced("--json"), capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
