#!/usr/bin/env python3
"""The dispatcher against a recording webhook receiver on loopback:
every decided touch delivered once with its idempotency key, throughput and
group commit; a receiver answering 500 for a while (retries, the circuit
opens, then closes, nothing lost); a receiver that hangs or is SIGSTOPped
mid-request (timeouts and retries, the control socket keeps answering, the
late answer changes nothing); a hard bounce (SMTP 550 from aiosmtpd) marks
the contact's channel unusable and the next decision uses the other channel;
a webhook 410 disables the channel, its queue kept, until a reload; a touch
waiting for a retry is withdrawn when its contact opts out, and waits while
its customer is paused; bad dispatcher settings in the config name file and
line."""
import json
import os
import re
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402
import receiver as rx  # noqa: E402

N = 300 if rx.SANITIZED else 2000


class DispatchCase(h.DaemonTestCase):
    def setUp(self):
        super().setUp()
        if not h.plugins_built("webhook", "file"):
            self.fail("the webhook and file plugins are not built in %r" % h.PLUGIN_BUILD_DIR)
        self.rx = rx.Receiver(self.tmp.path)
        self.db = self.tmp.join("state", "cadence.db")

    def tearDown(self):
        self.rx.stop()
        super().tearDown()

    def setup_daemon(self, n, **kw):
        cfg = rx.write_dispatch_config(self.tmp, self.rx.url(), **kw)
        rx.import_customers(h.CADENCED, cfg, rx.write_customers(self.tmp, n))
        return cfg

    def states(self):
        out = {}
        for row in rx.outbox_rows(self.db):
            out[row[2]] = out.get(row[2], 0) + 1
        return out

    def wait_delivered(self, n, timeout):
        return rx.wait_until(lambda: self.states().get("delivered", 0) >= n, timeout)


class Delivery(DispatchCase):
    def test_every_touch_delivered_once_with_its_key(self):
        cfg = self.setup_daemon(N, concurrency=32)
        t0 = time.monotonic()
        d = self.start(config=cfg)
        self.assertTrue(self.wait_delivered(N, 120), "not all delivered: %r" % self.states())
        elapsed = time.monotonic() - t0
        ids = self.rx.ids()
        rows = rx.outbox_rows(self.db)
        self.assertEqual(len(rows), N)
        keys = {r[1] for r in rows}
        self.assertEqual(set(ids), keys, "the receiver saw other keys than the store holds")
        self.assertEqual(len(ids), len(set(ids)), "a key was received twice without a crash")
        self.assertTrue(all(r[3] == 1 for r in rows), "a touch needed more than one attempt")
        # The per-channel outcomes survive a reload (a new plugin host).
        d.signal(signal.SIGHUP)
        self.assertTrue(rx.wait_until(lambda: "reload: the new configuration is in force"
                                      in d.read_log(), 10))
        r = d.ctl("--json", "plugins")
        self.assertEqual(r.returncode, 0, r.stderr)
        hook = next(p for p in json.loads(r.stdout)["plugins"] if p["channel"] == "hook")
        self.assertEqual((hook["delivered"], hook["failed"], hook["withdrawn"]), (N, 0, 0), hook)
        self.assertEqual(d.stop(), 0)
        log = d.read_log()
        m = re.search(r"dispatch: stopped delivered=(\d+) retried=(\d+) dead=(\d+) commits=(\d+)",
                      log)
        self.assertIsNotNone(m, log[-2000:])
        commits = int(m.group(4))
        sys.stderr.write("dispatch: %d touches in %.2f s (%.0f/s from start to last delivered), "
                         "%d outcome commits (%.1f outcomes per commit)\n"
                         % (N, elapsed, N / elapsed, commits, N / max(commits, 1)))
        self.assertLess(commits, N, "outcomes were not grouped into transactions")

    def test_utf8_ids_make_a_printable_key(self):
        """Ids with spaces, "/" and UTF-8 are valid; the touch's key (the
        webhook-id header) percent-encodes them."""
        cfg = self.setup_daemon(1)
        d = self.start(config=cfg)
        cust, event = "caf\u00e9 b\u00fcro/1", "ord caf\u00e9"
        for args in (("customer", "add", cust, "stage=active"),
                     ("contact", "add", "cafe-dm", cust, "roles=decision_maker"),
                     ("event", "add", event, cust, "purchase")):
            r = d.ctl(*args)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(self.wait_delivered(2, 20), "%r" % self.states())
        self.assertIn("caf%C3%A9%20b%C3%BCro%2F1/order_thanks/e:ord%20caf%C3%A9", self.rx.ids())
        self.assertEqual(d.stop(), 0)

    def test_receiver_failing_then_recovering_loses_nothing(self):
        n = 40
        self.rx.set(status=500)
        cfg = self.setup_daemon(n, concurrency=4, circuit_threshold=3)
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: "circuit open" in d.read_log(), 20),
                        "the circuit never opened:\n" + d.read_log()[-3000:])
        # The channel claims ahead (8 x concurrency 4 = 32 of the 40), but
        # what waited unsent when the circuit opened is taken back: the
        # failing receiver saw the first failures and what was on the wire.
        time.sleep(0.3)
        first_wave = len(self.rx.records())
        sys.stderr.write("attempts before the circuit held: %d\n" % first_wave)
        self.assertLessEqual(first_wave, 16, "the circuit let %d first attempts through"
                             % first_wave)
        # While open, the channel is probed about once a second, not hammered.
        before = len(self.rx.records())
        time.sleep(2.5)
        during = len(self.rx.records()) - before
        self.assertLessEqual(during, 8, "the open circuit let %d attempts through" % during)
        self.assertEqual(self.states().get("dead", 0), 0)
        self.rx.set(status=200)
        self.assertTrue(self.wait_delivered(n, 60), "not all delivered: %r" % self.states())
        self.assertIn("circuit closed", d.read_log())
        rows = rx.outbox_rows(self.db)
        self.assertTrue(any(r[3] > 1 for r in rows), "no touch was retried")
        delivered_ids = [r["id"] for r in self.rx.records() if r["status"] == 200]
        self.assertEqual(sorted(delivered_ids), sorted(r[1] for r in rows),
                         "each touch must be accepted exactly once")
        self.assertEqual(d.stop(), 0)

    def test_a_reload_lets_transfers_on_the_wire_finish(self):
        """A reload while requests are out: the old plugins finish them
        (within the shutdown grace) instead of the new ones sending them a
        second time; every key is received once."""
        n = 4
        self.rx.set(delay_ms=1500)
        cfg = self.setup_daemon(n, concurrency=4)
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: len(self.rx.records()) == n, 20),
                        d.read_log()[-2000:])
        r = d.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(self.wait_delivered(n, 20), "%r" % self.states())
        time.sleep(0.5)
        ids = self.rx.ids()
        self.assertEqual(len(ids), n, "a key was sent again after the reload: %r" % ids)
        self.assertIn("reload: the previous plugin host is closed", d.read_log())
        self.assertEqual(d.stop(), 0)

    def test_repointing_a_failing_channel_and_reloading_resets_its_circuit(self):
        """The operator fixes a channel whose endpoint fails by pointing it at
        another URL and reloading: its touches go out at once, not after the
        open circuit's next probe ten minutes later."""
        n = 20
        self.rx.set(status=500)
        cfg = self.setup_daemon(n, concurrency=4, circuit_threshold=3, circuit_interval="10m")
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: "circuit open" in d.read_log(), 20),
                        "the circuit never opened:\n" + d.read_log()[-3000:])
        # What the operator sees meanwhile: every view says the channel is
        # not sending and why the touches due already wait.
        self.assertTrue(rx.wait_until(lambda: "held: its channel's circuit is open" in d.ctl(
            "outbox", "list").stdout, 10), d.ctl("outbox", "list").stdout)
        status = d.ctl("status").stdout
        self.assertRegex(status, r"channels +1 with the circuit open")
        # status counts what alerts shows: the channel not sending is an open alert
        self.assertRegex(status, r"open alerts +1 \(0 customer alerts, 0 dead touches, 1 "
                                 r"channels not sending; see `cadencectl alerts`\)")
        self.assertRegex(d.ctl("alerts").stdout, r"1 channels not sending[\s\S]*channel hook "
                         r"\(webhook\): circuit open since \S+ \S+ after \d+ failures in a row; its "
                         r"touches wait; last error: endpoint answered 500")
        self.assertRegex(d.ctl("plugins").stdout, r"hook +webhook .* open ")
        fixed = rx.Receiver(self.tmp.path, name="fixed")
        try:
            rx.write_dispatch_config(self.tmp, fixed.url(), concurrency=4, circuit_threshold=3,
                                     circuit_interval="10m")
            d.signal(signal.SIGHUP)
            self.assertTrue(self.wait_delivered(n, 30),
                            "not delivered after the reload: %r\n%s"
                            % (self.states(), d.read_log()[-3000:]))
            self.assertIn("circuit reset, the channel's plugin or settings changed", d.read_log())
            self.assertEqual(sorted(r["id"] for r in fixed.records() if r["status"] == 200),
                             sorted(r[1] for r in rx.outbox_rows(self.db)))
            self.assertEqual(d.stop(), 0)
        finally:
            fixed.stop()

    def test_retry_after_is_honoured(self):
        self.rx.set(status=503, retry_after=3)
        cfg = self.setup_daemon(1, circuit_threshold=0)
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: len(self.rx.records()) >= 1, 20))
        self.rx.set(status=200)
        self.assertTrue(self.wait_delivered(1, 20), d.read_log()[-2000:])
        recs = self.rx.records()
        self.assertEqual(len(recs), 2)
        # Our own backoff is at most 2 s here; the receiver asked for 3.
        self.assertGreaterEqual(recs[1]["t"] - recs[0]["t"], 2.9)
        # Every transition is kept, with its time and attempt number.
        key = str(rx.outbox_rows(self.db)[0][0])
        r = d.ctl("--json", "outbox", "show", key)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        shown = json.loads(r.stdout)
        steps = [(x["state"], x["attempt"]) for x in shown["history"]]
        self.assertEqual(steps, [("queued", 0), ("in_flight", 1), ("retry_wait", 1),
                                 ("in_flight", 2), ("delivered", 2)], shown)
        self.assertIn("503", shown["history"][2]["detail"])
        self.assertEqual(shown["touch"]["state"], "delivered")
        self.assertTrue(all(x["at"] > 0 for x in shown["history"]))
        text = d.ctl("outbox", "show", key).stdout
        self.assertIn("touch %s: delivered, 2 attempts" % key, text)
        self.assertRegex(text, r"WHEN \(UTC\) +STATE +ATTEMPT +DETAIL")
        self.assertRegex(text, r"retry_wait +1 +endpoint answered 503")
        r = d.ctl("outbox", "show", "999999")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no touch with key 999999", r.stderr)
        d.stop()


class Limits(DispatchCase):
    def test_channel_rate_spreads_sends(self):
        n = 12
        cfg = self.setup_daemon(n, hook_extra="rate = 4.0; burst = 1;")
        d = self.start(config=cfg)
        self.assertTrue(self.wait_delivered(n, 30), "%r" % self.states())
        t = sorted(r["t"] for r in self.rx.records())
        # One token every 250 ms: eleven intervals at least.
        self.assertGreaterEqual(t[-1] - t[0], 2.5, "12 sends at 4/s took %.2f s" % (t[-1] - t[0]))
        self.assertEqual(d.stop(), 0)

    def shared_limit_run(self, engine_extra, hook_extra, files_extra):
        """Two webhook channels, each fed by its own rule (even customers by
        the purchase rule on "hook", odd ones by a renewal rule on "hook2"):
        returns the receiver's arrival times per channel."""
        n = 24
        cfg = rx.write_dispatch_config(self.tmp, self.rx.url(), hook_extra=hook_extra)
        text = h.read_text(cfg)
        text = text.replace('batch_size = 500;', 'batch_size = 500; %s' % engine_extra)
        text = text.replace(
            '  {{ name = "files";'.replace("{{", "{"),
            '  { name = "hook2"; plugin = "webhook"; address = "none"; concurrency = 4;'
            ' circuit_threshold = 0; %s settings = { url = "%s"; secret_file = "hook.secret"; };'
            ' },\n  { name = "files";' % (files_extra, self.rx.url()))
        text = text.replace('rules = (\n', 'rules = (\n'
                            '  { name = "renewal_note"; purpose = "transactional";'
                            ' trigger = { event = "renewal_due"; after = "0s"; expires = "7d"; };'
                            ' stages = [ "active" ]; roles = [ "decision_maker" ];'
                            ' channels = [ "hook2" ]; bypass_caps = true; bypass_quiet_hours = true;'
                            ' template = "thanks"; },\n')
        cfg = h.write_config(self.tmp, name="shared.conf", text=text)
        paths = rx.write_customers(self.tmp, n)
        events = [json.loads(line) for line in open(paths[2])]
        with open(paths[2], "w") as f:
            for i, e in enumerate(events):
                if i % 2:
                    e["type"] = "renewal_due"
                f.write(json.dumps(e) + "\n")
        rx.import_customers(h.CADENCED, cfg, paths)
        d = self.start(config=cfg)
        self.assertTrue(self.wait_delivered(n, 30), "%r" % self.states())
        self.assertEqual(d.stop(), 0)
        times = {"hook": [], "hook2": []}
        for r in self.rx.records():
            times["hook2" if int(r["customer"][-5:]) % 2 else "hook"].append(r["t"])
        self.assertEqual([len(v) for v in times.values()], [n // 2, n // 2])
        return times

    def assert_shared_and_fair(self, times, rate, burst):
        t = sorted(times["hook"] + times["hook2"])
        least = (len(t) - burst) / rate
        self.assertGreaterEqual(t[-1] - t[0], least - 0.3,
                                "%d sends over both channels at %s/s (burst %d) took %.2f s"
                                % (len(t), rate, burst, t[-1] - t[0]))
        # They take turns: each channel sends in the first half of the run.
        half = t[0] + (t[-1] - t[0]) / 2
        for name, ts in times.items():
            self.assertGreaterEqual(sum(1 for x in ts if x < half), 3, "%s starved" % name)

    def test_a_provider_account_rate_holds_over_all_its_channels(self):
        times = self.shared_limit_run("", 'account = "acct"; account_rate = 8.0; account_burst = 2;',
                                      'account = "acct";')
        self.assert_shared_and_fair(times, 8.0, 2)

    def test_the_global_rate_holds_over_all_channels(self):
        times = self.shared_limit_run("dispatch_rate = 8.0; dispatch_burst = 2;", "", "")
        self.assert_shared_and_fair(times, 8.0, 2)

    def test_domain_limit_holds_touches_in_the_outbox_until_their_turn(self):
        """domain_per_minute = 20: a burst of 20 to example.com, then one
        every 3 s. The others go back to the outbox unsent, retry_wait with
        "held: ..." and due at their turns one token apart (not in flight,
        no attempt counted), survive a restart, can be cancelled by the
        operator, and each goes out at its turn as attempt 1."""
        n = 24
        cfg = self.setup_daemon(n, hook_extra="domain_per_minute = 20;")
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: self.states() == {"delivered": 20,
                                                                "retry_wait": 4}, 20),
                        "%r" % self.states())
        held = [r for r in rx.outbox_rows(self.db) if r[2] == "retry_wait"]
        for r in held:
            self.assertEqual(r[3], 0, "a held touch counted an attempt: %r" % (r,))
            self.assertTrue(r[5].startswith("held: mail domain example.com is at its limit of "
                                            "20 a minute"), r)
        dues = rx.query(self.db, "SELECT key, due_at FROM touches WHERE state = 'retry_wait'"
                                 " ORDER BY due_at")
        gaps = [b[1] - a[1] for a, b in zip(dues, dues[1:])]
        self.assertTrue(all(2 <= g <= 4 for g in gaps), "turns not one token apart: %r" % dues)
        listing = d.ctl("outbox", "list").stdout
        self.assertIn("held: mail domain example.com", listing)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(self.states(), {"delivered": 20, "retry_wait": 4})
        d = self.start(config=cfg)
        last = dues[-1][0]
        r = d.ctl("outbox", "cancel", str(last))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(self.wait_delivered(n - 1, 30), "%r" % self.states())
        time.sleep(0.5)
        self.assertEqual(self.states(), {"delivered": n - 1, "cancelled": 1})
        recs = self.rx.records()
        self.assertEqual(len(recs), n - 1, "a touch was sent twice or the cancelled one sent")
        self.assertEqual({rec["attempt"] for rec in recs}, {1})
        times = sorted(rec["t"] for rec in recs)[-3:]
        self.assertTrue(all(b - a >= 1.5 for a, b in zip(times, times[1:])),
                        "held touches went out together: %r" % times)
        self.assertEqual(d.stop(), 0)

    def test_held_touches_cannot_be_pushed_past_the_limit_and_late_turns_die_unsent(self):
        """domain_per_minute = 6 and touches that expire 40 s from now: 6 go
        at once, the next turns (10 s apart) that still fall before the
        expiry wait, the rest die at once, "expired: its turn ...", with no
        attempt counted. An operator's retry of a waiting one is refused:
        it would break the limit."""
        n = 20
        cfg = self.setup_daemon(n, hook_extra="domain_per_minute = 6;", expires="100s")
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: self.states().get("in_flight", 0) == 0 and
                                      self.states().get("delivered", 0) == 6, 20),
                        "%r" % self.states())
        rows = rx.outbox_rows(self.db)
        dead = [r for r in rows if r[2] == "dead"]
        held = [r for r in rows if r[2] == "retry_wait"]
        self.assertGreater(len(dead), 0, rows)
        self.assertGreater(len(held), 0, rows)
        for r in dead:
            self.assertEqual(r[3], 0, "a touch never sent counted an attempt: %r" % (r,))
            self.assertIn("expired: its turn under the mail domain's limit", r[5])
        r = d.ctl("outbox", "retry", str(held[0][0]))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, r"touch %d waits its turn, at \S+ \S+Z \(held: mail domain "
                                   r"example.com is at its limit" % held[0][0])
        self.assertEqual(len(self.rx.records()), 6)
        self.assertEqual(d.stop(), 0)

    def test_a_probe_held_by_the_domain_limit_does_not_stick_the_circuit(self):
        """The circuit opens; its half-open probe is a touch whose mail
        domain has no token: it is held for its turn, and the next touch
        claimed is the probe, so the circuit still closes once the
        receiver answers again (it stayed half-open for good)."""
        n = 12
        self.rx.set(status=500)
        cfg = self.setup_daemon(n, hook_extra="domain_per_minute = 6;", concurrency=4,
                                circuit_threshold=3, circuit_interval="1s")
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: "circuit open" in d.read_log(), 20),
                        d.read_log()[-2000:])
        self.rx.set(status=200)
        self.assertTrue(rx.wait_until(lambda: "circuit closed" in d.read_log(), 30),
                        "%r\n%s" % (self.states(), d.read_log()[-3000:]))
        self.assertEqual(self.states().get("in_flight", 0), 0)
        self.assertEqual(d.stop(), 0)



class Stalls(DispatchCase):
    def test_a_second_sigterm_stops_at_once_and_loses_nothing(self):
        """The receiver answers after 10 s; SIGTERM waits for it (up to 3/4 of
        the 8 s shutdown_timeout), a second SIGTERM does not: exit 0 at once,
        and the cut-off touches are sent again after a restart."""
        n = 8
        self.rx.set(delay_ms=10000)
        cfg = self.setup_daemon(n, concurrency=4, timeout="30s", shutdown="8s",
                                circuit_threshold=0)
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: len(self.rx.records()) >= 4, 20))
        d.signal(signal.SIGTERM)
        time.sleep(0.3)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        rc = d.wait_exit(15)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, d.read_log()[-2000:])
        self.assertLess(took, 2.0, "exit took %.2f s after the second SIGTERM" % took)
        self.assertIn("second stop signal", d.read_log())
        # The operator is told what was cut and may reach the receiver twice.
        self.assertRegex(d.read_log(), r"warning: dispatch: 8 touches had no answer when the "
                         r"shutdown grace ended; .* cut=8 maybe_received=4")
        self.daemons.remove(d)
        d.close()
        self.assertEqual(self.states().get("delivered", 0), 0)
        self.rx.set(delay_ms=0)
        d = self.start(config=cfg)
        self.assertTrue(self.wait_delivered(n, 20), "%r" % self.states())
        self.assertEqual(d.stop(), 0)

    def test_stopped_receiver_times_out_and_retries_without_stalling(self):
        n = 20
        self.rx.set(hang=True)
        cfg = self.setup_daemon(n, concurrency=4, timeout="1s", circuit_threshold=0)
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: len(self.rx.records()) >= 1, 20),
                        d.read_log()[-2000:])
        self.rx.pause()  # SIGSTOP with requests in the middle of being answered
        try:
            # The loop does not stall: status answers quickly during the outage.
            worst = 0.0
            for _ in range(10):
                t = time.monotonic()
                r = d.ctl("status", timeout=5)
                worst = max(worst, time.monotonic() - t)
                self.assertEqual(r.returncode, 0, r.stderr)
                time.sleep(0.2)
            self.assertLess(worst, 1.0, "status took %.2f s while transfers hung" % worst)
            # The operator sees 4 running (the channel's concurrency) and
            # claimed touches waiting in the channel's lane (those not
            # waiting for a retry after a timeout).
            r = d.ctl("--json", "plugins", timeout=5)
            self.assertEqual(r.returncode, 0, r.stderr)
            hook = next(p for p in json.loads(r.stdout)["plugins"] if p["channel"] == "hook")
            self.assertEqual(hook["in_flight"], 4, hook)
            self.assertGreater(hook["queued"], 0, hook)
            self.assertLessEqual(hook["in_flight"] + hook["queued"], n, hook)
            self.assertTrue(rx.wait_until(lambda: "touch retry" in d.read_log(), 10),
                            d.read_log()[-2000:])
        finally:
            self.rx.resume()
        self.rx.set(hang=False)
        self.assertTrue(self.wait_delivered(n, 60), "not all delivered: %r" % self.states())
        rows = rx.outbox_rows(self.db)
        self.assertTrue(any(r[3] > 1 for r in rows), "no touch needed a second attempt")
        self.assertEqual(self.states(), {"delivered": n})
        # The late answers to the first attempts changed nothing: every touch
        # is delivered once in the store, whatever the receiver saw.
        self.assertEqual(set(self.rx.ids()), {r[1] for r in rows})
        self.assertEqual(d.stop(), 0)


class _RejectingSmtp:
    """An aiosmtpd server on loopback that answers 550 to RCPT TO for the
    addresses in `reject` and accepts everything else."""

    def __init__(self):
        try:
            from aiosmtpd.controller import Controller
        except ImportError:  # python3 from elsewhere than Debian
            sys.path.append("/usr/lib/python3/dist-packages")
            from aiosmtpd.controller import Controller
        self.reject = set()
        self.received = []
        outer = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                if address in outer.reject:
                    return "550 5.1.1 <%s>: mailbox unavailable" % address
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 Ok"

            async def handle_DATA(self, server, session, envelope):
                outer.received.extend(envelope.rcpt_tos)
                return "250 2.0.0 Ok"

        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()
        self.url = "smtp://127.0.0.1:%d" % port

    def stop(self):
        self.controller.stop()


class Feedback(DispatchCase):
    def test_hard_bounce_marks_the_contact_and_the_next_decision_respects_it(self):
        """A 550 to RCPT TO (a hard bounce) makes the touch dead and marks the
        contact's email unusable: the customer's next order goes through the
        other channel, another customer's through email; the operator clears
        the mark with `contact usable`."""
        n = 6
        smtp = _RejectingSmtp()
        self.addCleanup(smtp.stop)
        smtp.reject = {"pat2@example.com"}
        cfg = rx.write_dispatch_config(
            self.tmp, smtp.url, hook_plugin="email", hook_address="email",
            hook_settings='starttls = "off"; from = "success@example.com";')
        rx.import_customers(h.CADENCED, cfg, rx.write_customers(self.tmp, n, email_consent=True))
        d = self.start(config=cfg)
        self.assertTrue(self.wait_delivered(n - 1, 30), "%r" % self.states())
        self.assertTrue(rx.wait_until(lambda: self.states().get("dead", 0) == 1, 10))
        dead = [r for r in rx.outbox_rows(self.db) if r[2] == "dead"]
        self.assertIn("550 5.1.1", dead[0][5])
        unusable = rx.query(self.db, "SELECT co.id, cc.channel, cc.reason, cc.address"
                                     " FROM contact_channels cc"
                                     " JOIN contacts co ON co.key = cc.contact_key")
        self.assertEqual([(u[0], u[1], u[3]) for u in unusable],
                         [("cust-00002-dm", "hook", "pat2@example.com")])
        self.assertIn("provider:", unusable[0][2])
        # A new order from the same customer goes through the other channel.
        for eid, cust in (("cust-00002-order2", "cust-00002"), ("cust-00003-order2", "cust-00003")):
            r = d.ctl("event", "add", eid, cust, "purchase", "at=now")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(rx.wait_until(lambda: len(rx.outbox_rows(self.db)) == n + 2, 20),
                        d.read_log()[-3000:])
        self.assertTrue(self.wait_delivered(n + 1, 30), "%r" % self.states())
        chans = dict(rx.query(self.db, "SELECT e.id, t.channel FROM touches t JOIN events e"
                                       " ON e.key = t.trigger_key"))
        self.assertEqual(chans["cust-00002-order2"], "files")
        self.assertEqual(chans["cust-00003-order2"], "hook")
        # alerts counts the dead touch and names it
        alerts = d.ctl("alerts").stdout
        self.assertIn("1 dead touches", alerts)
        self.assertRegex(alerts, r"latest dead touches[^\n]*\n.*\n\d+ +cust-00002 +order_thanks +hook"
                                 r" +1 +permanent: SMTP server refused recipient")
        # The operator clears the mark: the contact is reachable on hook again.
        r = d.ctl("contact", "usable", "cust-00002-dm", "hook")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(rx.query(self.db, "SELECT COUNT(*) FROM contact_channels"), [(0,)])
        r = d.ctl("contact", "usable", "cust-00002-dm", "hook")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("channel hook is not marked unusable", r.stderr)
        r = d.ctl("contact", "usable", "nobody", "hook")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("contact 'nobody' does not exist", r.stderr)
        r = d.ctl("contact", "usable", "cust-00002-dm", "nosuch")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no channel 'nosuch' in the configuration", r.stderr)
        smtp.reject = set()
        r = d.ctl("event", "add", "cust-00002-order3", "cust-00002", "purchase", "at=now")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(rx.wait_until(lambda: dict(rx.query(
            self.db, "SELECT e.id, t.channel FROM touches t JOIN events e"
                     " ON e.key = t.trigger_key")).get("cust-00002-order3") == "hook", 20))
        self.assertTrue(rx.wait_until(lambda: "pat2@example.com" in smtp.received, 20))
        self.assertEqual(d.stop(), 0)

    def test_gone_disables_the_channel_until_a_reload_and_keeps_its_queue(self):
        """A webhook endpoint answering 410 Gone: that touch is dead, no
        contact is marked, the channel stops at once with the rest of its
        queue intact (alerts, status and metrics say so); a reload enables
        it, the queue drains, and the operator retries the dead touch."""
        n = 6
        self.rx.set(status=410)
        cfg = self.setup_daemon(n, concurrency=1, circuit_threshold=100)
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: self.states().get("dead", 0) == 1, 20),
                        d.read_log()[-2000:])
        self.assertTrue(rx.wait_until(lambda: "channel disabled, its endpoint is gone"
                                      in d.read_log(), 10))
        time.sleep(1.5)  # nothing more reaches the gone endpoint
        # concurrency 1: the first request, and at most the one the transfer
        # thread started as the first answer came (it goes back to the queue)
        self.assertLessEqual(len(self.rx.records()), 2, self.rx.records())
        self.assertEqual(self.states(), {"dead": 1, "queued": n - 1})
        self.assertEqual(rx.query(self.db, "SELECT COUNT(*) FROM contact_channels"), [(0,)])
        dead = [r for r in rx.outbox_rows(self.db) if r[2] == "dead"]
        self.assertIn("410", dead[0][5])
        alerts = d.ctl("alerts").stdout
        self.assertRegex(alerts, r"channel hook \(webhook\): disabled since .*fix its url or "
                                 r"credentials and reload: endpoint answered 410 Gone")
        status = d.ctl("status").stdout
        self.assertIn("1 disabled, endpoint gone or credentials refused", status)
        js = json.loads(d.ctl("--json", "alerts").stdout)
        self.assertEqual([c["kind"] for c in js["channels"]], ["channel_disabled"])
        self.assertIn('cadence_channel_disabled{channel="hook"} 1', d.ctl("metrics").stdout)
        hook = next(p for p in json.loads(d.ctl("--json", "plugins").stdout)["plugins"]
                    if p["channel"] == "hook")
        self.assertTrue(hook["disabled"], hook)
        # The endpoint is back (the url fixed): a reload enables the channel.
        self.rx.set(status=200)
        r = d.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(self.wait_delivered(n - 1, 20), "%r" % self.states())
        self.assertTrue(rx.wait_until(lambda: "channel enabled again by a reload"
                                      in d.read_log(), 5))
        self.assertIn('cadence_channel_disabled{channel="hook"} 0', d.ctl("metrics").stdout)
        # Every dead touch of the channel again, in one command.
        for bad, code in ((("--dead", "--channel", "nosuch"), 1), (("--channel", "hook"), 2),
                          (("7", "--dead"), 2), ((), 2)):
            r = d.ctl("outbox", "retry", *bad)
            self.assertEqual(r.returncode, code, (bad, r.stdout, r.stderr))
        self.assertIn("no channel 'nosuch'", d.ctl("outbox", "retry", "--dead", "--channel",
                                                  "nosuch").stderr)
        r = d.ctl("raw", '{"cmd": "outbox.retry", "state": "queued"}')
        self.assertIn("only dead touches are sent again in bulk", r.stdout + r.stderr)
        r = d.ctl("outbox", "retry", "--dead", "--channel", "hook", "--since", "now+1h")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("0 dead touches queued again", r.stdout)  # none died in the future
        r = d.ctl("outbox", "retry", "--dead", "--channel", "hook", "--since", "now-1h")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("1 dead touches queued again", r.stdout)
        self.assertTrue(self.wait_delivered(n, 20), "%r" % self.states())
        self.assertEqual(sorted(set(self.rx.ids())), sorted(r[1] for r in rx.outbox_rows(self.db)))
        self.assertEqual(sum(1 for r in self.rx.records() if r["status"] == 200), n)
        self.assertEqual(d.stop(), 0)


class SendTimeChecks(DispatchCase):
    def test_touches_waiting_in_the_lane_are_checked_again_after_a_change(self):
        """A slow receiver and concurrency 1: one touch on the wire, the
        others claimed ahead, waiting in the channel's lane. Meanwhile one
        contact opts out, one customer is paused and one address is
        suppressed: none of those three is sent; the rest are, once each."""
        n = 6
        self.rx.set(delay_ms=1500)
        cfg = rx.write_dispatch_config(self.tmp, self.rx.url(), hook_address="email",
                                       concurrency=1, circuit_threshold=0)
        rx.import_customers(h.CADENCED, cfg,
                            rx.write_customers(self.tmp, n, email_consent=True))
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: len(self.rx.records()) >= 1, 20))
        first = self.rx.records()[0]["customer"]
        rest = sorted({"cust-%05d" % i for i in range(n)} - {first})
        self.assertEqual(self.states(), {"in_flight": n}, "not all claimed ahead")
        opted, paused, suppressed = rest[0], rest[1], rest[2]
        for args in (("contact", "consent", opted + "-dm", "email", "out", "--source",
                      "unsubscribe link"),
                     ("pause", paused),
                     ("suppress", "add", "pat%d@example.com" % int(suppressed[-5:]),
                      "--reason", "complaint")):
            r = d.ctl(*args)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.rx.set(delay_ms=0)

        def states():
            return {r[1].split("/")[0]: r[2] for r in rx.outbox_rows(self.db)}

        want = {c: "delivered" for c in rest[3:] + [first]}
        want.update({opted: "cancelled", paused: "queued", suppressed: "cancelled"})
        self.assertTrue(rx.wait_until(lambda: states() == want, 20), "%r" % states())
        time.sleep(0.5)
        got = sorted(rec["customer"] for rec in self.rx.records())
        self.assertEqual(got, sorted(rest[3:] + [first]), "a stopped touch was sent")
        self.assertIn("taken back to be checked again", d.read_log())
        self.assertEqual(d.stop(), 0)

    def test_a_waiting_touch_is_not_sent_after_an_opt_out_or_while_paused(self):
        """Touches wait for a retry; meanwhile one contact opts out of email
        and one customer is paused. The opted-out touch is withdrawn, never
        sent again; the paused one waits and goes once the customer is
        resumed; the others are delivered."""
        self.rx.set(status=503, retry_after=3)
        cfg = rx.write_dispatch_config(self.tmp, self.rx.url(), hook_address="email",
                                       circuit_threshold=0)
        rx.import_customers(h.CADENCED, cfg,
                            rx.write_customers(self.tmp, 3, email_consent=True))
        d = self.start(config=cfg)
        self.assertTrue(rx.wait_until(lambda: len(self.rx.records()) >= 3, 20))
        for args in (("contact", "consent", "cust-00000-dm", "email", "out", "--source",
                      "unsubscribe link"),
                     ("pause", "cust-00001")):
            r = d.ctl(*args)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.rx.set(status=200)

        def rows():  # customer id -> outbox row
            return {r[1].split("/")[0]: r for r in rx.outbox_rows(self.db)}

        def states():
            return {c: r[2] for c, r in rows().items()}

        self.assertTrue(rx.wait_until(lambda: states() == {
            "cust-00000": "cancelled", "cust-00001": "retry_wait", "cust-00002": "delivered"},
            20), "%r" % rows())
        withdrawn = rows()["cust-00000"]
        self.assertIn("not sent: the contact has no email consent any more", withdrawn[5])
        self.assertEqual(withdrawn[3], 1)  # the withdrawal is not an attempt
        time.sleep(1.5)  # past the paused touch's retry time
        self.assertEqual(states()["cust-00001"], "retry_wait")
        # The operator sees when it would go, and why it has not.
        why = d.ctl("why", "cust-00001").stdout
        self.assertIn("retry_wait (1 attempt so far, next ", why)
        self.assertIn("endpoint answered 503 with Retry-After 3s", why)
        self.assertTrue(rx.wait_until(lambda: "; held: the customer is paused)" in d.ctl(
            "why", "cust-00001").stdout, 6), d.ctl("why", "cust-00001").stdout)
        listing = d.ctl("outbox", "list", "--state", "retry_wait").stdout
        self.assertIn("NEXT (UTC)", listing)
        self.assertRegex(listing, r"\ntouch \d+ \(channel hook\) held: the customer is paused\n")
        self.assertRegex(listing, r"retry_wait .* 1 +\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")
        by_customer = {}
        for rec in self.rx.records():
            by_customer[rec["customer"]] = by_customer.get(rec["customer"], 0) + 1
        self.assertEqual(by_customer, {"cust-00000": 1, "cust-00001": 1, "cust-00002": 2})
        self.assertIn("touch withdrawn channel=hook", d.read_log())
        r = d.ctl("resume", "cust-00001")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(rx.wait_until(lambda: states()["cust-00001"] == "delivered", 10),
                        "%r" % rows())
        self.assertEqual(len([x for x in self.rx.records() if x["customer"] == "cust-00000"]), 1)
        # Once the contact opts in again, the operator can send the withdrawn touch.
        key = str(rows()["cust-00000"][0])
        # While the reason holds, a retry is refused and says what stops it.
        r = d.ctl("outbox", "retry", key)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("touch %s would not be sent: the contact has no email consent any more "
                      "(contact cust-00000-dm, channel hook)" % key, r.stderr)
        self.assertEqual(states()["cust-00000"], "cancelled")
        r = d.ctl("contact", "consent", "cust-00000-dm", "email", "in", "--source", "re-subscribed")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = d.ctl("outbox", "retry", key)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(rx.wait_until(lambda: states()["cust-00000"] == "delivered", 10),
                        "%r" % rows())
        self.assertEqual(len([x for x in self.rx.records() if x["customer"] == "cust-00000"]), 2)
        metrics = d.ctl("metrics").stdout
        self.assertIn('cadence_dispatch_outcomes_total{channel="hook",outcome="withdrawn"} 1',
                      metrics)
        self.assertEqual(rx.query(self.db, "SELECT COUNT(*) FROM contact_channels"), [(0,)])
        self.assertEqual(d.stop(), 0)


    def test_an_address_taken_off_the_suppression_list_is_reached_again(self):
        cfg = rx.write_dispatch_config(self.tmp, self.rx.url(), hook_address="email",
                                       channels='"hook"')
        paths = rx.write_customers(self.tmp, 2, email_consent=True)
        rx.import_customers(h.CADENCED, cfg, paths[:2])  # customers and contacts, no events
        d = self.start(config=cfg)
        r = d.ctl("suppress", "add", "PAT0@example.com", "--reason", "complaint")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for cust in ("cust-00000", "cust-00001"):
            r = d.ctl("event", "add", cust + "-order", cust, "purchase", "at=now")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(self.wait_delivered(1, 20), "%r" % self.states())
        time.sleep(0.5)
        self.assertEqual([x["customer"] for x in self.rx.records()], ["cust-00001"])
        self.assertIn("the address is on the suppression list", d.ctl("why", "cust-00000").stdout)
        # Taken off the list: the customer is evaluated at once and reached.
        r = d.ctl("suppress", "remove", "pat0@example.com")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(self.wait_delivered(2, 10), "%r" % self.states())
        self.assertEqual(sorted(x["customer"] for x in self.rx.records()),
                         ["cust-00000", "cust-00001"])
        self.assertEqual(d.stop(), 0)


class BadConfig(DispatchCase):
    def test_bad_dispatch_settings_name_file_and_line(self):
        good = rx.write_dispatch_config(self.tmp, self.rx.url(), name="good.conf")
        text = h.read_text(good)
        cases = [
            ('retry_schedule = "exponential";', 'retry_schedule = "linear";', "retry_schedule"),
            ('retry_cap = "2s";', 'retry_cap = "500ms";', "retry_cap"),
            ('retry_base = "1s";', 'retry_base = "10s";', "retry_cap"),
            ('circuit_threshold = 5;', 'circuit_threshold = 5; account_rate = 5.0;', "account"),
            ('circuit_threshold = 5;', 'circuit_threshold = -1;', "circuit_threshold"),
            ('circuit_interval = "1s";', 'circuit_interval = "0s";', "circuit_interval"),
            ('circuit_threshold = 5;', 'circuit_threshold = 5; domain_per_minute = "ten";',
             "domain_per_minute"),
            ('shutdown_timeout = "5s";', 'shutdown_timeout = "5s"; dispatch_rate = -3.0;',
             "dispatch_rate"),
        ]
        for old, new, word in cases:
            self.assertIn(old, text)
            bad = self.tmp.join("bad.conf")
            h.write_text(bad, text.replace(old, new, 1))
            r = __import__("subprocess").run([h.CADENCED, "--config", bad, "--check"],
                                             capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 1, "%s accepted:\n%s%s" % (new, r.stdout, r.stderr))
            self.assertRegex(r.stderr, r"bad\.conf:\d+: .*%s" % word, new)


if __name__ == "__main__":
    h.main()
