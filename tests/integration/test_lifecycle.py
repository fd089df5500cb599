"""cadenced's life as systemd sees it: flags, --check, READY/RELOADING/STOPPING,
the watchdog, SIGHUP with a broken and with a changed config, SIGTERM, logs.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402


class Flags(h.DaemonTestCase):
    def test_version(self):
        r = subprocess.run([h.CADENCED, "--version"], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^cadenced \d+\.\d+\.\d+\n$")

    def test_help_lists_every_option(self):
        r = subprocess.run([h.CADENCED, "--help"], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0)
        for opt in ("--config", "--check", "--state-dir", "--socket", "--plugin-dir",
                    "--log-level", "--version"):
            self.assertIn(opt, r.stdout)

    def test_unknown_flag_is_a_usage_error(self):
        r = subprocess.run([h.CADENCED, "--bogus"], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn("Usage:", r.stderr)

    def test_bad_log_level_is_a_usage_error(self):
        cfg = h.write_config(self.tmp)
        r = subprocess.run([h.CADENCED, "-c", cfg, "--log-level", "loud"], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn('unknown level "loud"', r.stderr)


class Check(h.DaemonTestCase):
    def test_check_accepts_the_small_config(self):
        cfg = h.write_config(self.tmp)
        r = subprocess.run([h.CADENCED, "--check", "--config", cfg], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration OK", r.stdout)

    def test_check_accepts_the_example_config(self):
        example = os.path.join(h.SOURCE_DIR, "etc", "cadenced.conf")
        if not os.path.exists(example):
            self.skipTest("etc/cadenced.conf is not in the tree yet")
        r = subprocess.run([h.CADENCED, "--check", "--config", example], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        if h.plugins_built("file", "sms", "webhook", "email"):
            r = subprocess.run([h.CADENCED, "--check", "--config", example, "--plugin-dir",
                                h.PLUGIN_BUILD_DIR], capture_output=True, text=True, timeout=20)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn("plugins not checked", r.stdout)
            # The secrets the shipped unit loads are the ones the example
            # config names: with exactly those files every channel checks.
            unit = os.path.join(h.SOURCE_DIR, "systemd", "cadenced.service.in")
            with open(unit) as f:
                names = re.findall(r"^LoadCredential=([^:]+):", f.read(), re.M)
            self.assertIn("sms-token", names)
            creds = self.tmp.join("credentials")
            os.mkdir(creds)
            for name in names:
                h.write_text(os.path.join(creds, name), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
                             if name == "webhook-secret" else "s3cret\n")
            env = dict(os.environ, CREDENTIALS_DIRECTORY=creds)
            r = subprocess.run([h.CADENCED, "--check", "--config", example, "--plugin-dir",
                                h.PLUGIN_BUILD_DIR], capture_output=True, text=True, timeout=20,
                               env=env)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertNotIn("not checked further", r.stdout + r.stderr)

    def test_check_validates_plugin_settings(self):
        if not h.plugins_built("file"):
            self.skipTest("the file plugin is not built")
        good = h.write_config(self.tmp)
        r = subprocess.run([h.CADENCED, "--check", "-c", good, "--plugin-dir", h.PLUGIN_BUILD_DIR],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("plugins not checked", r.stdout)
        text = h.read_text(good).replace('address = "none"; }',
                                         'address = "none";\n    settings = { directroy = "out"; }; }')
        bad = h.write_config(self.tmp, name="plugin-typo.conf", text=text)
        line = next(i for i, l in enumerate(text.splitlines()) if "directroy" in l) + 1
        r = subprocess.run([h.CADENCED, "--check", "-c", bad, "--plugin-dir", h.PLUGIN_BUILD_DIR],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s:%d:" % (bad, line), r.stderr)
        self.assertIn("directroy", r.stderr)

    def test_check_says_when_plugins_were_not_checked(self):
        good = h.write_config(self.tmp)
        missing = self.tmp.join("no-plugins-here")
        r = subprocess.run([h.CADENCED, "--check", "-c", good, "--plugin-dir", missing],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("plugins not checked: %s" % missing, r.stdout)

    def test_check_names_file_and_line_of_a_typo(self):
        good = h.write_config(self.tmp)
        text = h.read_text(good).replace('level = "info";', 'levle = "info";')
        bad = h.write_config(self.tmp, name="typo.conf", text=text)
        line = text.splitlines().index('  levle = "info";') + 1
        r = subprocess.run([h.CADENCED, "--check", "--config", bad], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s:%d:" % (bad, line), r.stderr)
        self.assertIn("levle", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_check_of_a_missing_file_fails(self):
        missing = self.tmp.join("nope.conf")
        r = subprocess.run([h.CADENCED, "--check", "--config", missing], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn(missing, r.stderr)

    def test_start_with_a_broken_config_exits_1_naming_the_line(self):
        bad = h.write_config(self.tmp, text="store = { state_dir = 12 };\n")
        d = self.start(config=bad, ready=False)
        self.assertEqual(d.wait_exit(10), 1)
        log = d.read_log()
        self.assertIn("%s:1:" % bad, log)
        self.assertEqual(d.notify.poll(0.1), [])  # never READY


class Lifecycle(h.DaemonTestCase):
    def test_ready_status_and_sigterm(self):
        d = self.start()
        self.assertTrue(os.path.isfile(self.tmp.join("state", "cadence.db")))
        st = os.stat(d.socket)
        self.assertEqual(st.st_mode & 0o777, 0o660)
        self.assertGreaterEqual(d.notify.wait_for("STATUS=", 5), 0)
        r = d.ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^pid\s+%d$" % d.proc.pid)
        start = time.monotonic()
        mark = len(d.notify.messages)
        rc = d.stop(5)
        self.assertEqual(rc, 0, d.read_log())
        self.assertLess(time.monotonic() - start, 5)
        self.assertGreaterEqual(d.notify.wait_for("STOPPING=1", 1, start=mark), 0)
        self.assertFalse(os.path.exists(d.socket), "the socket file is removed at exit")
        self.assertIn("cadenced stopped exit_code=0", d.read_log())

    def test_runs_on_the_example_config(self):
        d = self.start_example(args=["--plugin-dir", self.tmp.join("plugins")])
        r = d.ctl("--json", "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        status = json.loads(r.stdout)
        self.assertGreater(status["playbook"]["rules"], 0)
        self.assertEqual(status["plugin_dir"], self.tmp.join("plugins"))  # last flag wins
        self.assertEqual(d.stop(), 0, d.read_log())

    def test_sigint_stops_like_sigterm(self):
        d = self.start()
        d.signal(signal.SIGINT)
        self.assertEqual(d.wait_exit(5), 0)
        self.assertGreaterEqual(d.notify.wait_for("STOPPING=1", 1), 0)

    def test_sigpipe_is_ignored(self):
        d = self.start()
        d.signal(signal.SIGPIPE)
        time.sleep(0.2)
        self.assertIsNone(d.proc.poll())
        self.assertEqual(d.ctl("status").returncode, 0)

    def test_state_dir_is_created(self):
        nested = self.tmp.join("a", "b", "state")
        d = self.start(args=["--state-dir", nested])
        self.assertTrue(os.path.isfile(os.path.join(nested, "cadence.db")))
        r = d.ctl("--json", "status")
        self.assertIn(nested, r.stdout)

    def test_systemd_directories_and_flag_precedence(self):
        env_state = self.tmp.join("env-state")
        runtime = self.tmp.join("run")
        os.mkdir(runtime)
        d = self.start(env={"STATE_DIRECTORY": env_state, "RUNTIME_DIRECTORY": runtime,
                            "CREDENTIALS_DIRECTORY": self.tmp.join("creds")})
        sock = os.path.join(runtime, "control.sock")
        r = d.ctl("--json", "status", socket_path=sock)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(os.path.join(env_state, "cadence.db"), r.stdout)
        self.assertEqual(d.stop(), 0)
        # Flags win over the environment.
        flag_state = self.tmp.join("flag-state")
        flag_sock = self.tmp.join("flag.sock")
        d2 = self.start(args=["--state-dir", flag_state, "--socket", flag_sock],
                        env={"STATE_DIRECTORY": env_state, "RUNTIME_DIRECTORY": runtime})
        r = d2.ctl("--json", "status", socket_path=flag_sock)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(os.path.join(flag_state, "cadence.db"), r.stdout)
        self.assertFalse(os.path.exists(sock))

    def test_a_second_daemon_on_the_same_socket_is_refused(self):
        d = self.start()
        d2 = h.Daemon(self.tmp, d.config, args=["--state-dir", self.tmp.join("other")])
        self.daemons.append(d2)
        self.assertEqual(d2.wait_exit(10), 1)
        self.assertIn("another cadenced is answering", d2.read_log())
        self.assertEqual(d.ctl("status").returncode, 0, "the first one still answers")

    def test_a_stale_socket_file_is_replaced(self):
        cfg = h.write_config(self.tmp)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(self.tmp.join("control.sock"))
        stale.close()  # the file stays, nobody listens
        d = self.start(config=cfg)
        self.assertEqual(d.ctl("status").returncode, 0)
        self.assertIn("removed a stale socket", d.read_log())

    def test_a_non_socket_at_the_socket_path_is_refused(self):
        cfg = h.write_config(self.tmp)
        with open(self.tmp.join("control.sock"), "w") as f:
            f.write("not a socket")
        d = self.start(config=cfg, ready=False)
        self.assertEqual(d.wait_exit(10), 1)
        self.assertIn("is not a socket", d.read_log())

    def test_watchdog_pings_at_half_the_interval(self):
        d = self.start(env={"WATCHDOG_USEC": "400000"})
        time.sleep(1.0)
        d.notify.poll(0.1)
        pings = d.notify.messages.count("WATCHDOG=1")
        self.assertGreaterEqual(pings, 4, d.notify.messages)  # every 200 ms

    def test_no_watchdog_for_another_pid(self):
        d = self.start(env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
        time.sleep(0.5)
        d.notify.poll(0.1)
        self.assertNotIn("WATCHDOG=1", d.notify.messages)


class Reload(h.DaemonTestCase):
    def test_broken_config_on_sighup_keeps_the_old_one(self):
        d = self.start()
        good = h.read_text(d.config)
        broken = good.replace('level = "info";', 'level = "info";\n  colour = "blue";')
        bad_line = broken.splitlines().index('  colour = "blue";') + 1
        h.write_text(d.config, broken)
        mark = len(d.notify.messages)
        d.signal(signal.SIGHUP)
        i = d.notify.wait_for("RELOADING=1", 5, start=mark)
        self.assertGreaterEqual(i, 0, d.notify.messages)
        self.assertGreaterEqual(d.notify.wait_for("READY=1", 5, start=i + 1), 0)
        self.assertIsNone(d.proc.poll(), "still running")
        r = d.ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^log level\s+info$")
        self.assertRegex(r.stdout, r"(?m)^reloads\s+1 \(1 failed\).*rejected$")
        log = d.read_log()
        self.assertIn("%s:%d:" % (d.config, bad_line), log)
        self.assertIn("still running on the previous one", log)

    def test_valid_changed_config_on_sighup_is_applied(self):
        d = self.start()
        text = h.read_text(d.config).replace('level = "info";', 'level = "debug";')
        h.write_text(d.config, text)
        mark = len(d.notify.messages)
        d.signal(signal.SIGHUP)
        i = d.notify.wait_for("RELOADING=1", 5, start=mark)
        self.assertGreaterEqual(i, 0)
        self.assertGreaterEqual(d.notify.wait_for("READY=1", 5, start=i + 1), 0)
        r = d.ctl("status")
        self.assertRegex(r.stdout, r"(?m)^log level\s+debug$")
        self.assertIn("the new configuration is in force", d.read_log())

    def test_log_level_flag_survives_reload(self):
        d = self.start(args=["--log-level", "warning"])
        d.signal(signal.SIGHUP)
        d.notify.wait_for("RELOADING=1", 5)
        time.sleep(0.2)
        r = d.ctl("status")
        self.assertRegex(r.stdout, r"(?m)^log level\s+warning$")

    def test_state_dir_change_needs_a_restart(self):
        d = self.start()
        text = h.read_text(d.config).replace(self.tmp.join("state"), self.tmp.join("moved"))
        h.write_text(d.config, text)
        r = d.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("needs a restart", d.read_log())
        r = d.ctl("--json", "status")
        self.assertIn(self.tmp.join("state", "cadence.db"), r.stdout)

    def test_reload_command_reports_every_error(self):
        d = self.start()
        good = h.read_text(d.config)
        broken = good.replace('level = "info";', 'level = "loud";').replace(
            'min_gap = "3d";', 'min_gap = "3 fortnights";')
        h.write_text(d.config, broken)
        r = d.ctl("reload")
        self.assertEqual(r.returncode, 1)
        self.assertIn("invalid_config", r.stderr)
        lines = broken.splitlines()
        for needle in ('level = "loud";', 'min_gap = "3 fortnights";'):
            n = next(i for i, l in enumerate(lines) if needle in l) + 1
            self.assertIn("%s:%d:" % (d.config, n), r.stderr)
        h.write_text(d.config, good)
        r = d.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("reloaded", r.stdout)


class Logs(h.DaemonTestCase):
    def test_human_lines_have_a_timestamp_and_level(self):
        d = self.start()
        d.stop()
        first = d.read_log().splitlines()[0]
        self.assertRegex(first, r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4} notice: cadenced .* running ")

    def test_journal_stream_gets_priority_prefixes(self):
        cfg = h.write_config(self.tmp)
        # JOURNAL_STREAM names the file cadenced's stderr is, as journald would.
        log_path = self.tmp.join("journal.log")
        with open(log_path, "wb") as f:
            st = os.fstat(f.fileno())
            env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
            env.pop("NOTIFY_SOCKET", None)
            p = subprocess.Popen([h.CADENCED, "-c", cfg], stdout=f, stderr=f, env=env)
            try:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not os.path.exists(self.tmp.join("control.sock")):
                    time.sleep(0.05)
                time.sleep(0.2)
                p.send_signal(signal.SIGTERM)
                self.assertEqual(p.wait(timeout=5), 0)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=5)
        lines = h.read_text(log_path).splitlines()
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, r"^<[3-7]>[^<]")
        self.assertTrue(any(l.startswith("<5>cadenced") for l in lines), lines)


if __name__ == "__main__":
    h.main()
