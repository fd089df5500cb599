#!/usr/bin/env python3
"""The dispatcher under environmental faults.

Full disk: the state directory is a small tmpfs (skipped, with the reason,
when the test cannot mount one); with the disk filled, new decisions are
refused with a clear error while touches already decided still go out;
once space is back nothing decided or accepted is lost.

Wall-clock jumps (libfaketime with a timestamp file re-read at run time,
the monotonic clock left alone, as an NTP step would): a jump forward past
the touches' expiry makes them dead ("expired"), never sent late; a jump
backward does not stall the calendar: new events are decided and delivered
at once."""
import datetime
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402
import receiver as rx  # noqa: E402

FAKETIME_LIBS = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1"]


class FaultCase(h.DaemonTestCase):
    def setUp(self):
        super().setUp()
        if not h.plugins_built("webhook", "file"):
            self.fail("the webhook and file plugins are not built in %r" % h.PLUGIN_BUILD_DIR)
        self.rx = rx.Receiver(self.tmp.path)
        self.db = self.tmp.join("state", "cadence.db")
        self.mounted = None

    def tearDown(self):
        self.rx.stop()
        for d in self.daemons:
            d.kill()
        if self.mounted:
            subprocess.run(["umount", "-l", self.mounted], capture_output=True)
        super().tearDown()

    def states(self):
        out = {}
        for row in rx.outbox_rows(self.db):
            out[row[2]] = out.get(row[2], 0) + 1
        return out


class FullDisk(FaultCase):
    def mount_small_tmpfs(self, path, size):
        if os.geteuid() != 0:
            self.skipTest("full-disk test needs root to mount a small tmpfs (running as uid %d)"
                          % os.geteuid())
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("cannot mount a tmpfs here: %s" % r.stderr.strip())
        self.mounted = path

    def fill(self, path):
        """Fills the file system holding path; returns the filler's name."""
        filler = os.path.join(path, "filler")
        chunk = b"\0" * 4096
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while True:
                os.write(fd, chunk)
        except OSError:
            pass
        finally:
            os.close(fd)
        return filler

    def test_full_disk_refuses_decisions_while_the_outbox_drains(self):
        n = 100 if rx.SANITIZED else 300
        self.mount_small_tmpfs(self.tmp.join("state"), "32m")
        self.rx.set(hang=True)
        cfg = rx.write_dispatch_config(self.tmp, self.rx.url(), concurrency=8, timeout="20s",
                                       circuit_threshold=0)
        rx.import_customers(h.CADENCED, cfg, rx.write_customers(self.tmp, n))
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: len(rx.outbox_rows(self.db)) == n, 30),
                        d.read_log()[-2000:])
        keys = {r[1] for r in rx.outbox_rows(self.db)}
        filler = self.fill(self.tmp.join("state"))
        # New decisions are refused: the event cannot be stored, or its
        # decision cannot be recorded; either way the error says why.
        refused = []
        for i in range(40):
            r = d.ctl("event", "add", "late-%d" % i, "cust-%05d" % (i % n), "purchase", "at=now")
            if r.returncode != 0:
                refused.append(r.stdout + r.stderr)
        log = d.read_log()
        full_words = ("full", "FULL")
        self.assertTrue(any(w in t for t in refused for w in full_words) or
                        any(w in log for w in full_words),
                        "no clear disk-full error:\n%s\n%s" % (refused[:3], log[-3000:]))
        # The touches decided before still go out.
        self.rx.set(hang=False)
        self.assertTrue(rx.wait_until(lambda: keys <= set(self.rx.ids()), 60),
                        "the outbox did not drain on a full disk: %d of %d received\n%s"
                        % (len(keys & set(self.rx.ids())), n, d.read_log()[-3000:]))
        # Space comes back: everything accepted is recorded and delivered.
        os.unlink(filler)
        accepted = 40 - len(refused)
        self.assertTrue(rx.wait_until(lambda: self.states().get("delivered", 0) >= n + accepted,
                                      60),
                        "after the disk was freed: %r (accepted events %d)\n%s"
                        % (self.states(), accepted, d.read_log()[-3000:]))
        self.assertEqual(self.states().get("dead", 0), 0)
        self.assertEqual(d.stop(timeout=15), 0)
        recs = self.rx.records()
        self.assertEqual({r[1] for r in rx.outbox_rows(self.db)}, {r["id"] for r in recs})
        sys.stderr.write("full disk: %d events refused, %d accepted, %d touches delivered\n"
                         % (len(refused), accepted, self.states().get("delivered", 0)))


class ClockJumps(FaultCase):
    def faketime_env(self, spec_file):
        lib = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
        if not lib:
            self.skipTest("libfaketime is not installed (package faketime)")
        if rx.SANITIZED:
            self.skipTest("libfaketime cannot be preloaded before the address sanitizer runtime")
        return {"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": spec_file,
                "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    @staticmethod
    def iso(offset_days):
        t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=offset_days)
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    def add_event(self, d, eid, customer, offset_days):
        r = d.ctl("event", "add", eid, customer, "purchase", "at=" + self.iso(offset_days))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_wall_clock_jumps_neither_send_late_nor_stall(self):
        n = 20
        spec = self.tmp.join("faketime.spec")
        h.write_text(spec, "+0d\n")
        env = self.faketime_env(spec)
        self.rx.set(status=503)
        cfg = rx.write_dispatch_config(self.tmp, self.rx.url(), concurrency=8, expires="1d",
                                       retry_cap="3s", circuit_threshold=0)
        rx.import_customers(h.CADENCED, cfg, rx.write_customers(self.tmp, n))
        d = self.start(config=cfg, env=env)
        self.assertTrue(rx.wait_until(lambda: len(set(self.rx.ids())) >= n, 30),
                        d.read_log()[-2000:])
        # Forward two days: every touch is now past its one-day expiry.
        h.write_text(spec, "+2d\n")
        self.assertTrue(rx.wait_until(lambda: self.states().get("dead", 0) == n, 30),
                        "%r\n%s" % (self.states(), d.read_log()[-3000:]))
        self.rx.set(status=200)
        time.sleep(1)
        late = [r for r in self.rx.records() if r["status"] == 200]
        self.assertEqual(late, [], "a touch was sent after its expiry")
        # Dead because the next attempt would be past the expiry or max_age.
        self.assertTrue(all("expired" in r[5] or "max_age" in r[5]
                            for r in rx.outbox_rows(self.db)), rx.outbox_rows(self.db))
        # The calendar still runs on the new time: a new order is delivered at once.
        t0 = time.monotonic()
        self.add_event(d, "after-forward", "cust-00001", 2)
        self.assertTrue(rx.wait_until(lambda: self.states().get("delivered", 0) == 1, 15),
                        "%r\n%s" % (self.states(), d.read_log()[-3000:]))
        forward_s = time.monotonic() - t0
        # Backward three days (one day before real time): no stall either.
        h.write_text(spec, "-1d\n")
        time.sleep(0.5)
        t0 = time.monotonic()
        self.add_event(d, "after-backward", "cust-00002", -1)
        self.assertTrue(rx.wait_until(lambda: self.states().get("delivered", 0) == 2, 15),
                        "%r\n%s" % (self.states(), d.read_log()[-3000:]))
        backward_s = time.monotonic() - t0
        ids = self.rx.ids()
        self.assertEqual(len([i for i in ids if ids.count(i) > 1 and
                              any(r["status"] == 200 and r["id"] == i
                                  for r in self.rx.records())]), 0)
        self.assertEqual(d.stop(), 0)
        sys.stderr.write("clock jumps: delivered %.2f s after +2d, %.2f s after -3d\n"
                         % (forward_s, backward_s))

    def test_a_step_back_keeps_due_touches_due_and_retries_their_wait(self):
        """Touches wait for a retry (due in about 2 s) or, behind an open
        circuit, stay queued though due. The wall clock steps back an hour:
        the retries still come about 2 s later, the queued ones go at the
        circuit's next probe; nothing waits for the hour to pass again."""
        n = 10
        spec = self.tmp.join("faketime.spec")
        h.write_text(spec, "+0\n")
        env = self.faketime_env(spec)
        self.rx.set(status=500)
        cfg = rx.write_dispatch_config(self.tmp, self.rx.url(), concurrency=2, retry_cap="2s",
                                       circuit_threshold=2, circuit_interval="2s")
        rx.import_customers(h.CADENCED, cfg, rx.write_customers(self.tmp, n))
        d = self.start(config=cfg, env=env)
        self.assertTrue(rx.wait_until(lambda: "circuit open" in d.read_log(), 20),
                        d.read_log()[-2000:])
        self.assertTrue(rx.wait_until(lambda: self.states().get("in_flight", 0) == 0, 10))
        before = self.states()
        self.assertGreater(before.get("retry_wait", 0), 0, before)
        self.assertGreater(before.get("queued", 0), 0, before)
        h.write_text(spec, "-1h\n")
        self.rx.set(status=200)
        t0 = time.monotonic()
        self.assertTrue(rx.wait_until(lambda: self.states().get("delivered", 0) == n, 20),
                        "%r\n%s" % (self.states(),
                                                                d.read_log()[-3000:]))
        took = time.monotonic() - t0
        self.assertRegex(d.read_log(), r"dispatch: the wall clock stepped back 360[01] s")
        self.assertEqual(d.stop(), 0)
        sys.stderr.write("after a step back of 1 h: all delivered in %.2f s\n" % took)

    def test_a_step_forward_keeps_held_touches_spaced(self):
        """domain_per_minute = 6: six go, the others wait their turns 10 s
        apart. The wall clock steps forward 5 minutes (as after a suspend):
        the domain's bucket did not see that time pass, so the turns move
        with the clock instead of all falling due at once."""
        n = 10
        spec = self.tmp.join("faketime.spec")
        h.write_text(spec, "+0\n")
        env = self.faketime_env(spec)
        cfg = rx.write_dispatch_config(self.tmp, self.rx.url(),
                                       hook_extra="domain_per_minute = 6;")
        rx.import_customers(h.CADENCED, cfg, rx.write_customers(self.tmp, n))
        d = self.start(config=cfg, env=env)
        self.assertTrue(rx.wait_until(lambda: self.states() == {"delivered": 6, "retry_wait": 4},
                                      20), "%r" % self.states())
        h.write_text(spec, "+300\n")
        # noticed at the next pump: the first turn, 10 s on the monotonic clock
        self.assertTrue(rx.wait_until(lambda: "the wall clock stepped forward" in d.read_log(),
                                      20), d.read_log()[-2000:])
        time.sleep(3)
        self.assertLessEqual(self.states().get("delivered", 0), 7,
                             "held touches went out together after the step: %r" % self.states())
        self.assertRegex(d.read_log(), r"stepped forward 30[01] s .* moved=[34]")
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    h.main()
