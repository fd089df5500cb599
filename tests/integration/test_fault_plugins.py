#!/usr/bin/env python3
"""Plugin faults on the running daemon: a plugin whose init fails, one that
returns garbage outcomes, one that hangs inside send(), one that is slow.

Each test starts the real cadenced on a small playbook (an invoice notice,
transactional, due at once, to a billing contact over one channel "email")
with customers imported by `cadenced --import`, points the channel at a
faulty plugin, and checks what SPEC §4/§7 promise: a clear error naming the
plugin, no crash, the control socket still answering, no touch lost or
sent twice, and delivery once the fault clears (the operator switches the
channel to the file plugin and reloads, or restarts the daemon).
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402

N = 5
BUILD_DIR = os.environ.get("CADENCE_BUILD_DIR", "")
FIXTURES = os.path.join(BUILD_DIR, "tests", "plugins_bad")

CONFIG = """\
store = {{ state_dir = "{state}"; sync = "normal"; }};
control = {{ socket = "{socket}"; }};
log = {{ level = "info"; }};
engine = {{ shutdown_timeout = "2s"; }};
plugins = {{ dir = "{plugins}"; }};
channels = (
  {{ name = "email"; plugin = "{plugin}"; address = "email"; timeout = "2s";
     max_attempts = {max_attempts}; retry_base = "1s"; retry_cap = "2s"; circuit_interval = "2s";
     {settings} }}
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


class PluginFaults(h.DaemonTestCase):
    def setUp(self):
        super().setUp()
        if not h.plugins_built("file") or not os.path.exists(os.path.join(FIXTURES, "garbage.so")):
            self.fail("the file plugin and the fault fixtures must be built (run through CTest)")
        self.plugins = self.tmp.join("plugins")
        os.mkdir(self.plugins)
        os.symlink(os.path.join(h.PLUGIN_BUILD_DIR, "file.so"), os.path.join(self.plugins, "file.so"))
        for name in ("garbage", "hang", "slow", "init_fails", "controls", "spoof"):
            os.symlink(os.path.join(FIXTURES, name + ".so"), os.path.join(self.plugins, name + ".so"))
        self.out = self.tmp.join("out")
        self.config = self.tmp.join("cadenced.conf")
        self.release = self.tmp.join("release")

    def write_config(self, plugin, max_attempts=8, concurrency=4):
        settings = 'settings = { directory = "%s"; };' % self.out if plugin == "file" else ""
        settings += " concurrency = %d;" % concurrency
        h.write_text(self.config, CONFIG.format(
            state=self.tmp.join("state"), socket=self.tmp.join("control.sock"),
            plugins=self.plugins, plugin=plugin, settings=settings, max_attempts=max_attempts))

    def import_data(self):
        """N customers with a billing contact and an invoice issued a minute ago."""
        rows = {"customers": [], "contacts": [], "events": []}
        for i in range(N):
            cid = "cust-%02d" % i
            rows["customers"].append({"id": cid, "name": "Customer %d" % i, "stage": "active",
                                      "timezone": "Europe/London"})
            rows["contacts"].append({"id": cid + "-billing", "customer": cid, "name": "Pat",
                                     "first_name": "Pat", "roles": ["billing"],
                                     "email": "pat@%s.example" % cid,
                                     "consent": {"email": {"opted_in": True, "at": "now-1d",
                                                           "source": "test"}}})
            rows["events"].append({"id": cid + "-inv-1", "customer": cid,
                                   "type": "invoice_issued", "at": "now-1m"})
        for kind in ("customers", "contacts", "events"):
            path = self.tmp.join(kind + ".jsonl")
            h.write_text(path, "".join(json.dumps(r) + "\n" for r in rows[kind]))
            r = subprocess.run([h.CADENCED, "--config", self.config, "--import", kind, path],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def start_daemon(self, env=None):
        return self.start(config=self.config, args=["--plugin-dir", self.plugins], env=env)

    def request(self, d, req, timeout=None):
        """One request on its own connection; the checked result."""
        c = d.connect(timeout=timeout) if timeout else d.connect()
        try:
            r = c.call(req)
        finally:
            c.close()
        self.assertTrue(r and r.get("ok"), r)
        return r["result"]

    def outbox(self, d):
        return self.request(d, {"cmd": "outbox.list", "limit": 100})["touches"]

    def wait_outbox(self, d, pred, what, timeout=20):
        deadline = time.monotonic() + timeout
        touches = []
        while time.monotonic() < deadline:
            touches = self.outbox(d)
            if pred(touches):
                return touches
            time.sleep(0.2)
        self.fail("%s: not within %d s; outbox: %s\nlog:\n%s"
                  % (what, timeout, json.dumps(touches, indent=1), d.read_log()))

    def states(self, touches):
        return sorted(t["state"] for t in touches)

    def status_latency(self, d):
        t0 = time.monotonic()
        self.request(d, {"cmd": "status"}, timeout=5)
        return time.monotonic() - t0

    def fix_channel_and_reload(self, d):
        """The operator points the channel at a working plugin and reloads."""
        self.write_config("file")
        d.signal(signal.SIGHUP)

    def assert_delivered_once(self, d):
        touches = self.wait_outbox(d, lambda ts: len(ts) == N and all(
            t["state"] == "delivered" for t in ts), "every touch delivered")
        keys = [t["idempotency_key"] for t in touches]
        self.assertEqual(len(set(keys)), N, "one touch per customer")
        files = glob.glob(os.path.join(self.out, "*"))
        self.assertEqual(len(files), N, "one file per touch: %s" % files)

    # ---- tests -------------------------------------------------------------

    def test_init_failure_keeps_touches_queued_until_the_channel_is_fixed(self):
        self.write_config("init_fails")
        self.import_data()
        d = self.start_daemon()
        touches = self.wait_outbox(d, lambda ts: len(ts) == N, "touches decided")
        time.sleep(1.0)
        touches = self.outbox(d)
        self.assertEqual(self.states(touches), ["queued"] * N, "nothing dead or lost")
        log = d.read_log()
        self.assertIn("init_fails", log)
        self.assertIn("the fixture always fails", log)
        self.assertLess(self.status_latency(d), 1.0)
        # The operator sees it in status, and a reload that leaves it broken says so.
        r = d.ctl("status")
        self.assertIn("1 not loaded", r.stdout)
        r = d.ctl("alerts")
        self.assertRegex(r.stdout, r"plugin_not_loaded, circuit \w+, last error: .*"
                                   r"the fixture always fails")
        r = d.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("reloaded", r.stdout)
        self.assertRegex(r.stderr, r"warning: channel \S+ is not loaded; its touches wait in the "
                                   r"outbox: .*the fixture always fails")
        self.fix_channel_and_reload(d)
        self.assert_delivered_once(d)
        self.assertEqual(d.stop(), 0)

    def replace_plugin(self, build):
        """Installs tests/plugins_bad/<build>.so as plugins/swap.so the way
        install(1) does: a new file renamed over the old one."""
        tmp = os.path.join(self.plugins, ".swap.so.new")
        shutil.copyfile(os.path.join(FIXTURES, build + ".so"), tmp)
        os.rename(tmp, os.path.join(self.plugins, "swap.so"))

    def swap_version(self, d):
        plugins = self.request(d, {"cmd": "plugins"})["plugins"]
        (p,) = [p for p in plugins if p["channel"] == "email"]
        return p["version"] if p["loaded"] else None

    def test_reload_loads_a_replaced_build_and_keeps_a_channel_it_would_break(self):
        """A running channel's plugin file replaced by a new build: a reload
        loads the new build (the dynamic linker would hand back the old
        one); replaced by one that cannot start: the reload is refused with
        the config line and the running channel keeps delivering; a file
        overwritten in place with the same bytes reloads without harm."""
        self.replace_plugin("swap_v1")
        self.write_config("swap")
        self.import_data()
        d = self.start_daemon()
        self.wait_outbox(d, lambda ts: len(ts) == N and all(
            t["state"] == "delivered" for t in ts), "delivered by build v1")
        self.assertEqual(self.swap_version(d), "v1")

        self.replace_plugin("swap_broken")
        r = d.ctl("reload")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, r"cadenced\.conf:7: channel \"email\": kept running as it is; "
                                   r"with the new configuration: plugin swap failed to start: "
                                   r".*the fixture always fails")
        self.assertEqual(self.swap_version(d), "v1")
        r = d.ctl("event", "add", "cust-00-inv-2", "cust-00", "invoice_issued")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.wait_outbox(d, lambda ts: len(ts) == N + 1 and all(
            t["state"] == "delivered" for t in ts), "delivered by v1 after the refused reload")

        self.replace_plugin("swap_v2")
        r = d.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.swap_version(d), "v2")
        r = d.ctl("event", "add", "cust-01-inv-2", "cust-01", "invoice_issued")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.wait_outbox(d, lambda ts: len(ts) == N + 2 and all(
            t["state"] == "delivered" for t in ts), "delivered by v2")

        # cp over the file in place, same bytes: a new modification time
        with open(os.path.join(FIXTURES, "swap_v2.so"), "rb") as src, \
                open(os.path.join(self.plugins, "swap.so"), "r+b") as dst:
            dst.write(src.read())
        for _ in range(2):
            r = d.ctl("reload")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.swap_version(d), "v2")
        self.replace_plugin("swap_v1")
        r = d.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.swap_version(d), "v1")
        self.assertLess(self.status_latency(d), 1.0)
        # the private copies of new builds are gone from the state directory
        self.assertEqual([f for f in os.listdir(self.tmp.join("state")) if f.startswith(".swap")],
                         [])
        self.assertEqual(d.stop(), 0)

    def test_garbage_outcomes_are_retried_with_a_clear_reason_never_delivered(self):
        self.write_config("garbage", max_attempts=50)
        self.import_data()
        d = self.start_daemon()
        touches = self.wait_outbox(
            d, lambda ts: len(ts) == N and all(t["attempts"] >= 1 and t["state"] in (
                "retry_wait", "queued", "in_flight") and t["last_error"] for t in ts),
            "garbage outcomes recorded as failed attempts")
        for t in touches:
            self.assertNotEqual(t["state"], "delivered")
            self.assertIn("invalid outcome", t["last_error"])
            self.assertEqual(t["provider_id"], "")
        self.assertLess(self.status_latency(d), 1.0)
        self.fix_channel_and_reload(d)
        self.assert_delivered_once(d)
        self.assertEqual(d.stop(), 0)

    def test_a_reason_with_control_characters_or_none_is_made_safe(self):
        """A plugin's reason goes into logs, tables and terminals: its
        control characters become spaces; a failure without a reason says
        so; an unknown effect is logged and ignored."""
        self.write_config("controls")
        self.import_data()
        d = self.start_daemon()
        touches = self.wait_outbox(d, lambda ts: len(ts) == N and all(
            t["state"] == "dead" for t in ts), "every touch dead")
        reasons = sorted(t["last_error"] for t in touches)
        for r in reasons:
            self.assertFalse(any(ord(c) < 0x20 or c == "\x7f" for c in r), repr(r))
        self.assertIn("permanent: line1 2026-01-01 00:00:00 error: forged [31m red", reasons)
        self.assertIn("permanent: plugin controls gave no reason", reasons)
        log = d.read_log()
        self.assertIn("plugin controls returned an invalid outcome effect 99; ignored", log)
        self.assertNotIn("\x1b", log)
        self.assertFalse(any(line.startswith("2026-01-01") for line in log.splitlines()))
        self.assertNotIn("\x1b", d.ctl("outbox", "list").stdout)
        self.assertEqual(d.stop(), 0)

    def test_a_plugin_cannot_pass_its_retries_off_as_the_hosts(self):
        """Only the host's "not started" retries count no attempt: a plugin
        whose reason begins the same way uses up max_attempts like any
        other, and its reason is marked as the plugin's."""
        self.write_config("spoof", max_attempts=2)
        self.import_data()
        d = self.start_daemon()
        # (the circuit opens after 5 failures and probes one touch at a time)
        touches = self.wait_outbox(d, lambda ts: len(ts) == N and any(
            t["state"] == "dead" for t in ts), "a touch dead after 2 attempts", timeout=30)
        for t in touches:
            self.assertIn("plugin: not started: a plugin pretending", t["last_error"])
            self.assertGreaterEqual(t["attempts"], 1, t)
            if t["state"] == "dead":
                self.assertEqual(t["attempts"], 2, t)
                self.assertIn("gave up after 2 attempts", t["last_error"])
        self.assertEqual(d.stop(), 0)

    def test_a_hung_send_neither_blocks_the_daemon_nor_loses_its_touch(self):
        self.write_config("hang")
        self.import_data()
        d = self.start_daemon(env={"CADENCE_FAULT_RELEASE": self.release})
        self.wait_outbox(d, lambda ts: len(ts) == N and any(t["state"] == "in_flight" for t in ts),
                         "sends stuck in flight")
        # The loop is free: queries answer at once while every send hangs.
        for _ in range(5):
            self.assertLess(self.status_latency(d), 1.0)
        # SIGTERM gives up on the hung sends after shutdown_timeout.
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        rc = d.wait_exit(timeout=15)
        took = time.monotonic() - t0
        self.assertIsNotNone(rc, "cadenced did not exit within 15 s of SIGTERM:\n" + d.read_log())
        self.assertLess(took, 10.0)
        self.assertIn("a plugin is still inside send(); exiting without it", d.read_log())
        # Restarted on a working plugin: the abandoned touches are sent again,
        # with the same idempotency keys, once each.
        self.write_config("file")
        d2 = self.start_daemon()
        self.assert_delivered_once(d2)
        self.assertEqual(d2.stop(), 0)

    def test_a_send_past_its_timeout_is_retried_and_its_late_outcome_ignored(self):
        self.write_config("hang", max_attempts=50)
        self.import_data()
        d = self.start_daemon(env={"CADENCE_FAULT_RELEASE": self.release})
        t0 = time.monotonic()
        # The channel's timeout (2 s) gives every attempt hung inside send()
        # back for a retry; with all 4 of the channel's sends stuck, the
        # attempt waiting for one is given back as not started.
        touches = self.wait_outbox(
            d, lambda ts: len(ts) == N and all(
                ("did not return from send() within the channel's "
                 "timeout of 2000 ms" in t["last_error"] and t["attempts"] >= 1) or
                "not started: all 4 sends of channel email are stuck "
                "inside plugin hang's send()" in t["last_error"]
                for t in ts),
            "every hung attempt given back after the timeout", timeout=15)
        self.assertGreater(time.monotonic() - t0, 1.5, "not before the timeout")
        self.assertTrue(any("are stuck" in t["last_error"] for t in touches), touches)
        # A send that never started is no attempt: the fifth touch, which
        # never got a slot, has none however often it was given back.
        self.assertTrue(any(t["attempts"] == 0 and "are stuck" in t["last_error"]
                            for t in touches), touches)
        self.assertLess(self.status_latency(d), 1.0)
        log = d.read_log()
        self.assertIn("still inside send() after 2000 ms; the touch is retried", log)
        # The operator sees the stuck threads as in flight on the channel.
        plugins = self.request(d, {"cmd": "plugins"})["plugins"]
        email = [p for p in plugins if p["channel"] == "email"][0]
        self.assertGreaterEqual(email["in_flight"], 1, email)
        self.assertEqual(email["stuck"], 4, email)  # all 4 of the channel's sends
        metrics = self.request(d, {"cmd": "metrics"})["text"]
        self.assertIn('cadence_plugin_sends_stuck{channel="email"} 4\n', metrics)
        # The peer answers at last: the hung sends return "delivered", too
        # late to count; the touches are delivered by later attempts, once.
        h.write_text(self.release, "")
        touches = self.wait_outbox(d, lambda ts: len(ts) == N and all(
            t["state"] == "delivered" for t in ts), "every touch delivered", timeout=30)
        for t in touches:
            self.assertGreaterEqual(t["attempts"], 1, t)
        deadline = time.monotonic() + 10
        while "outcome delivered ignored" not in d.read_log() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertIn("returned from send() after its timeout; outcome delivered ignored",
                      d.read_log())
        self.assertNotIn("outcome not recorded", d.read_log())
        self.assertEqual(d.stop(), 0)

    def test_a_send_that_never_gets_a_pool_thread_is_given_back_unsent(self):
        # Concurrency 6 over libuv's 4 pool threads: 4 sends hang, the 5th
        # waits in the pool's queue; at the timeout it is cancelled there
        # (never sent) while the 4 are abandoned inside send().
        self.write_config("hang", max_attempts=50, concurrency=6)
        self.import_data()
        d = self.start_daemon(env={"CADENCE_FAULT_RELEASE": self.release,
                                   "UV_THREADPOOL_SIZE": "4"})
        touches = self.wait_outbox(
            d, lambda ts: len(ts) == N and all(t["last_error"] for t in ts),
            "every attempt given back after the timeout", timeout=15)
        errors = [t["last_error"] for t in touches]
        self.assertEqual(sum("did not return from send()" in e for e in errors), 4, errors)
        self.assertEqual(sum("not started within the channel's timeout of 2000 ms: every thread "
                             "of the pool" in e for e in errors), 1, errors)
        # the one never started is no attempt
        (unsent,) = [t for t in touches if "not started" in t["last_error"]]
        self.assertEqual(unsent["attempts"], 0, unsent)
        h.write_text(self.release, "")
        self.wait_outbox(d, lambda ts: len(ts) == N and all(
            t["state"] == "delivered" for t in ts), "every touch delivered", timeout=30)
        self.assertEqual(d.stop(), 0)

    def test_a_hung_send_times_out_on_the_host_a_reload_replaced(self):
        # The reload frees the old config while the old plugin host still
        # watches its hung sends: their timeout is reported with the names
        # the host kept, and every touch is delivered once the peer answers.
        self.write_config("hang", max_attempts=50)
        self.import_data()
        d = self.start_daemon(env={"CADENCE_FAULT_RELEASE": self.release})
        self.wait_outbox(d, lambda ts: len(ts) == N and any(t["state"] == "in_flight" for t in ts),
                         "sends stuck in flight")
        d.signal(signal.SIGHUP)
        self.wait_outbox(
            d, lambda ts: len(ts) == N and all(t["last_error"] for t in ts),
            "every hung attempt given back after the timeout", timeout=15)
        self.assertIn("plugin hang still inside send() after 2000 ms", d.read_log())
        self.assertIn("channel=email", d.read_log())
        self.assertLess(self.status_latency(d), 1.0)
        h.write_text(self.release, "")
        self.wait_outbox(d, lambda ts: len(ts) == N and all(
            t["state"] == "delivered" for t in ts), "every touch delivered", timeout=30)
        self.assertEqual(d.stop(), 0)

    def test_a_slow_send_waits_for_its_thread_without_timing_out(self):
        # One send at a time, 1.5 s each, timeout 2 s: the last of the five
        # waits 6 s for the thread, which does not count against its timeout.
        self.write_config("slow", concurrency=1)
        self.import_data()
        d = self.start_daemon()
        touches = self.wait_outbox(d, lambda ts: len(ts) == N and all(
            t["state"] == "delivered" for t in ts), "every touch delivered", timeout=30)
        for t in touches:
            self.assertEqual(t["attempts"], 1, t)
            self.assertEqual(t["provider_id"], "slow", t)
        self.assertNotIn("still inside send()", d.read_log())
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    h.main()
