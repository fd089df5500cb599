#!/usr/bin/env python3
"""Crash safety of the outbox: while the daemon dispatches a few thousand
webhook touches to a recording receiver, it is killed (SIGKILL) at its n-th
dispatch step for n = 1, 2, 3, ... (CADENCE_CRASH_AT_STEP: a send accepted,
an outcome received, an outcome batch committed) and at random moments, and
restarted each time. At the end every decided touch was received at least
once, every touch is delivered in the store, and a key was received twice
only across a crash (its first delivery was never recorded)."""
import bisect
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402
import receiver as rx  # noqa: E402

N = 400 if rx.SANITIZED else 3000
STEPS = list(range(1, 11)) + [17, 33, 65, 129, 257, 513]
RANDOM_KILLS = 4 if rx.SANITIZED else 8


class CrashSafety(h.DaemonTestCase):
    def setUp(self):
        super().setUp()
        if not h.plugins_built("webhook", "file"):
            self.fail("the webhook and file plugins are not built in %r" % h.PLUGIN_BUILD_DIR)
        self.rx = rx.Receiver(self.tmp.path)
        self.db = self.tmp.join("state", "cadence.db")
        self.deaths = []  # monotonic-free wall times just after each kill was observed

    def tearDown(self):
        self.rx.stop()
        super().tearDown()

    def delivered(self):
        if not os.path.exists(self.db):
            return 0
        return sum(1 for r in rx.outbox_rows(self.db) if r[2] == "delivered")

    def run_until_death(self, cfg, env=None, kill_after=None, timeout=60):
        d = self.start(config=cfg, env=env, ready=False)
        if kill_after is not None:
            time.sleep(kill_after)
            d.kill()
        rc = d.wait_exit(timeout)
        if rc is None:  # finished everything without reaching its crash step
            d.stop()
        self.deaths.append(time.time())
        self.daemons.remove(d)
        d.close()
        return rc

    def test_crash_at_every_step_and_at_random_loses_and_duplicates_nothing(self):
        cfg = rx.write_dispatch_config(self.tmp, self.rx.url(), concurrency=16,
                                       circuit_threshold=0)
        rx.import_customers(h.CADENCED, cfg, rx.write_customers(self.tmp, N))
        crashes = 0
        for n in STEPS:
            if self.delivered() >= N:
                break
            rc = self.run_until_death(cfg, env={"CADENCE_CRASH_AT_STEP": str(n)}, timeout=30)
            crashes += rc == -9
        rng = random.Random(int(os.environ.get("CADENCE_TEST_SEED", "5")))
        for _ in range(RANDOM_KILLS):
            if self.delivered() >= N:
                break
            self.run_until_death(cfg, kill_after=rng.uniform(0.05, 0.8))
            crashes += 1
        sys.stderr.write("crash test: %d kills, %d of %d delivered before the final run\n"
                         % (crashes, self.delivered(), N))
        self.assertGreaterEqual(crashes, 5, "the daemon was hardly ever killed mid-dispatch")
        d = self.start(config=cfg)
        ok = rx.wait_until(lambda: self.delivered() >= N, 120)
        rows = rx.outbox_rows(self.db)
        states = {}
        for r in rows:
            states[r[2]] = states.get(r[2], 0) + 1
        self.assertTrue(ok, "not all delivered after the crashes: %r\n%s"
                        % (states, d.read_log()[-3000:]))
        self.assertEqual(d.stop(), 0)
        self.assertEqual(len(rows), N, "a decided touch is missing or was decided twice")
        keys = {r[1] for r in rows}
        recs = self.rx.records()
        seen = {}
        for r in recs:
            seen.setdefault(r["id"], []).append(r["t"])
        self.assertEqual(set(seen), keys, "the receiver did not get every decided touch")
        # A second reception of a key needs a crash between the two. A request
        # written just before the kill may be read by the receiver a moment
        # after the death was observed: allow it LAG seconds.
        LAG = 0.5
        deaths = sorted(self.deaths)
        dups = 0
        for key, times in seen.items():
            times.sort()
            for a, b in zip(times, times[1:]):
                dups += 1
                i = bisect.bisect_right(deaths, a - LAG)
                self.assertTrue(i < len(deaths) and deaths[i] <= b,
                                "key %s received at %.3f and again at %.3f with no crash "
                                "between" % (key, a, b))
        sys.stderr.write("crash test: %d receptions of %d keys, %d re-sent across a crash\n"
                         % (len(recs), len(keys), dups))


if __name__ == "__main__":
    h.main()
