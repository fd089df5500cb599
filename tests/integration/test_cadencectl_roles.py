"""Roles through cadencectl with two uids: a peer no access rule names reads
(customers, calendar, why, report, metrics) but every change is refused as
forbidden and nothing changes; an admin rule lets the same uid change.
Needs root to run cadencectl as another uid; skipped otherwise.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402

NOBODY = 65534


def as_nobody():
    os.setgid(NOBODY)
    os.setgroups([])
    os.setuid(NOBODY)


class Roles(h.DaemonTestCase):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("needs root to run cadencectl as another uid (os.setuid)")
        os.chmod(self.tmp.path, 0o711)  # let the other uid reach the socket file
        self.customers = self.tmp.join("customers.jsonl")
        with open(self.customers, "w") as f:
            f.write('{"id": "c-1", "stage": "active"}\n')
        os.chmod(self.customers, 0o644)

    def test_read_role_queries_but_cannot_change(self):
        d = self.start(mode="0666")
        self.assertEqual(d.ctl("customer", "add", "c-0", "stage=active").returncode, 0)
        for args in (("customer", "list"), ("customer", "show", "c-0"), ("calendar",),
                     ("why", "c-0"), ("report",), ("holdout",), ("alerts",), ("metrics",),
                     ("plugins",), ("outbox", "list")):
            r = d.ctl(*args, preexec_fn=as_nobody)
            self.assertEqual(r.returncode, 0, "%s: %s" % (args, r.stderr))
        for args in (("customer", "add", "c-9"), ("customer", "update", "c-0", "stage=former"),
                     ("contact", "add", "k-1", "c-0"), ("event", "add", "e-1", "c-0", "purchase"),
                     ("pause", "c-0"), ("resume", "c-0"), ("outbox", "retry", "1"),
                     ("outbox", "cancel", "1"), ("import", "customers", self.customers)):
            r = d.ctl(*args, preexec_fn=as_nobody)
            self.assertEqual(r.returncode, 1, "%s: %s" % (args, r.stdout))
            self.assertIn("forbidden", r.stderr)
        status = json.loads(d.ctl("--json", "status").stdout)
        self.assertEqual(status["counts"]["customers"], 1)
        self.assertEqual(status["counts"]["events"], 0)
        shown = json.loads(d.ctl("--json", "customer", "show", "c-0").stdout)
        self.assertEqual((shown["stage"], shown["paused"]), ("active", False))
        self.assertIn("refused an admin command cmd=customer.add uid=%d" % NOBODY, d.read_log())

    def test_admin_rule_lets_the_other_uid_change(self):
        d = self.start(mode="0666", access=['{ uid = %d; role = "admin"; }' % NOBODY])
        r = d.ctl("import", "customers", self.customers, preexec_fn=as_nobody)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = d.ctl("pause", "c-1", preexec_fn=as_nobody)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIs(json.loads(d.ctl("--json", "customer", "show", "c-1").stdout)["paused"],
                      True)


if __name__ == "__main__":
    h.main()
