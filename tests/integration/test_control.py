"""The control socket protocol and cadencectl, against the real daemon:
replies and errors, limits, slow clients, roles from peer credentials,
cadencectl's output and exit codes.
"""

import json
import os
import random
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402

NOBODY = 65534


class Protocol(h.DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.d = self.start(max_line=1024, max_clients=4)
        self.c = self.d.connect()

    def tearDown(self):
        self.c.close()
        super().tearDown()

    def assert_error(self, reply, code, id=None):
        self.assertIsNotNone(reply, "the daemon closed the connection")
        self.assertIs(reply["ok"], False, reply)
        self.assertEqual(reply["error"]["code"], code, reply)
        self.assertTrue(reply["error"]["message"])
        self.assertEqual(reply["id"], id)

    def assert_usable(self):
        reply = self.c.call({"cmd": "status", "id": "after"})
        self.assertIs(reply["ok"], True, reply)
        self.assertEqual(reply["id"], "after")

    def test_status_result(self):
        r = self.c.call({"cmd": "status", "id": 1})
        self.assertIs(r["ok"], True)
        self.assertEqual(r["id"], 1)
        res = r["result"]
        self.assertEqual(res["pid"], self.d.proc.pid)
        self.assertRegex(res["version"], r"^\d+\.\d+\.\d+$")
        self.assertIsInstance(res["uptime"], int)
        self.assertEqual(res["config"], self.d.config)
        self.assertEqual(res["store"]["path"], self.tmp.join("state", "cadence.db"))
        self.assertGreaterEqual(res["store"]["schema_version"], 1)
        for k in ("customers", "contacts", "events", "decisions", "alerts_open"):
            self.assertEqual(res["counts"][k], 0, k)
        self.assertEqual(set(res["counts"]["touches"]),
                         {"queued", "in_flight", "retry_wait", "delivered", "dead", "cancelled"})
        for k in ("customers", "evaluations", "touches_decided", "deferred", "suppressed",
                  "errors"):
            self.assertIn(k, res["scheduler"])
        self.assertEqual(res["control"]["your_role"], "admin")

    def test_garbage_json(self):
        self.c.send_raw(b'{"cmd": "status",,}\n')
        self.assert_error(self.c.recv(), "bad_json")
        self.assert_usable()

    def test_invalid_utf8_is_bad_json(self):
        self.c.send_raw(b'{"cmd": "st\xffatus"}\n')
        self.assert_error(self.c.recv(), "bad_json")
        self.assert_usable()

    def test_unknown_command_echoes_the_id(self):
        self.assert_error(self.c.call({"cmd": "frobnicate", "id": "x-1"}), "unknown_command",
                          id="x-1")
        self.assert_usable()

    def test_ids_of_any_type_are_echoed(self):
        for id in (7, "seven", [1, 2], {"a": None}, 1.5, True):
            r = self.c.call({"cmd": "help", "id": id})
            self.assertEqual(r["id"], id)

    def test_not_an_object_or_no_cmd_is_bad_request(self):
        self.c.send_raw(b"[1, 2, 3]\n")
        self.assert_error(self.c.recv(), "bad_request")
        self.assert_error(self.c.call({"id": 3}), "bad_request", id=3)
        self.assert_error(self.c.call({"cmd": 42, "id": 4}), "bad_request", id=4)
        self.assert_usable()

    def test_duplicate_keys_are_bad_json(self):
        self.c.send_raw(b'{"cmd": "status", "cmd": "reload"}\n')
        self.assert_error(self.c.recv(), "bad_json")

    def test_over_long_line_is_discarded(self):
        self.c.send_raw(b'{"cmd": "status", "pad": "' + b"x" * 5000 + b'"}\n')
        r = self.c.recv()
        self.assert_error(r, "line_too_long")
        self.assertIn("1024", r["error"]["message"])
        self.assert_usable()

    def test_over_long_line_arriving_in_pieces(self):
        self.c.send_raw(b'{"cmd": "status", "pad": "' + b"y" * 800)
        time.sleep(0.05)
        self.c.send_raw(b"y" * 800)
        self.assert_error(self.c.recv(), "line_too_long")
        time.sleep(0.05)
        self.c.send_raw(b"y" * 3000 + b'"}\n{"cmd": "help", "id": 2}\n')
        r = self.c.recv()
        self.assertIs(r["ok"], True, r)  # the rest of the long line produced nothing
        self.assertEqual(r["id"], 2)

    def test_line_of_exactly_max_line_is_accepted(self):
        base = b'{"cmd": "help", "id": 9, "pad": ""}'
        line = base[:-2] + b"z" * (1024 - len(base)) + b'"}'
        self.assertEqual(len(line), 1024)
        self.c.send_raw(line + b"\n")
        r = self.c.recv()
        self.assertIs(r["ok"], True, r)

    def test_pipelined_requests_answer_in_order(self):
        self.c.send_raw(b"".join(json.dumps({"cmd": "help", "id": i}).encode() + b"\n"
                                 for i in range(50)))
        self.assertEqual([self.c.recv()["id"] for _ in range(50)], list(range(50)))

    def test_blank_lines_and_crlf(self):
        self.c.send_raw(b'\n  \n{"cmd": "help", "id": 1}\r\n')
        r = self.c.recv()
        self.assertIs(r["ok"], True)
        self.assertEqual(r["id"], 1)

    def test_random_bytes_get_one_reply_per_line(self):
        """A seeded stream of garbage, valid requests, blank and over-long lines,
        sent in random pieces: every complete non-blank line gets exactly one
        reply, in order, and the daemon stays up."""
        rng = random.Random(20261123)
        lines = []
        for i in range(600):
            kind = rng.random()
            if kind < 0.25:
                lines.append(json.dumps({"cmd": "help", "id": i}).encode())
            elif kind < 0.35:
                lines.append(b"x" * rng.randint(1025, 4000))
            elif kind < 0.4:
                lines.append(rng.choice([b"", b"  ", b"\t", b"\r"]))
            else:
                raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
                lines.append(raw.replace(b"\n", b" "))
        stream = b"".join(l + b"\n" for l in lines)
        expected = []
        for l in lines:
            if len(l) > 1024:
                expected.append("line_too_long")
                continue
            body = l[:-1] if l.endswith(b"\r") else l
            if body.strip(b" \t") == b"":
                continue
            expected.append("ok" if body.startswith(b'{"cmd": "help"') else "error")
        pos = 0
        while pos < len(stream):
            n = rng.randint(1, 3000)
            self.c.send_raw(stream[pos:pos + n])
            pos += n
        got = []
        for _ in expected:
            r = self.c.recv()
            self.assertIsNotNone(r, "connection closed after %d replies" % len(got))
            if r["ok"]:
                got.append("ok")
            else:
                code = r["error"]["code"]
                self.assertIn(code, ("bad_json", "bad_request", "unknown_command",
                                     "line_too_long"))
                got.append("line_too_long" if code == "line_too_long" else "error")
        self.assertEqual(got, expected)
        self.assert_usable()

    def test_half_closed_client_still_gets_its_reply(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.d.socket)
        s.sendall(b'{"cmd": "status", "id": "socat"}')  # no newline, then EOF, like `echo -n | socat`
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        r = json.loads(data)
        self.assertEqual(r["id"], "socat")
        self.assertIs(r["ok"], True)

    def test_help_lists_commands_with_roles(self):
        r = self.c.call({"cmd": "help"})
        cmds = {c["cmd"]: c["role"] for c in r["result"]["commands"]}
        self.assertEqual(cmds["status"], "read")
        self.assertEqual(cmds["reload"], "admin")

    def test_too_many_clients_get_busy(self):
        extra = [self.d.connect() for _ in range(3)]  # 4 with self.c
        for e in extra:
            self.assertIs(e.call({"cmd": "help"})["ok"], True)
        over = self.d.connect()
        self.assert_error(over.recv(), "busy")
        self.assertIsNone(over.recv(), "then the connection is closed")
        over.close()
        extra[0].close()
        time.sleep(0.2)
        again = self.d.connect()
        self.assertIs(again.call({"cmd": "help"})["ok"], True)
        for e in extra[1:] + [again]:
            e.close()

    def flood_until_dropped(self, chunk, timeout, check_others=False):
        """Writes `chunk` again and again on a connection that never reads
        (a 4 KiB receive buffer) until the daemon drops it; returns the
        seconds that took. Meanwhile, if asked, others must be served."""
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(2)
        slow.connect(self.d.socket)
        started = time.monotonic()
        dropped = False
        while not dropped and time.monotonic() < started + timeout:
            try:
                slow.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
            except socket.timeout:  # paused: the daemon no longer reads it
                if check_others:
                    self.assert_usable()
        slow.close()
        self.assertTrue(dropped, "the daemon kept a client that never reads")
        log = self.d.read_log()
        self.assertIn("does not read its replies", log)
        pending = [int(x) for x in re.findall(r"pending_bytes=(\d+)", log)]
        self.assertTrue(pending and max(pending) <= 1024 * 1024, pending)
        self.assert_usable()  # the loop never stalled
        return time.monotonic() - started

    def test_client_that_never_reads_is_disconnected(self):
        """Replies far larger than the requests (help, ~200 times): the
        daemon stops handling the client's requests once its unsent replies
        pile up (memory stays bounded, whatever one read brought in) and
        drops it when it takes none for 10 s."""
        self.flood_until_dropped(b'{"cmd":"help"}\n' * 5000, 30)

    def test_client_paused_and_dropped_when_small_replies_pile_up(self):
        """The same with replies smaller than the requests (bad_json, about
        100 bytes for 900): paused, dropped after 10 s, others served."""
        took = self.flood_until_dropped((b"x" * 900 + b"\n") * 100, 40, check_others=True)
        self.assertGreaterEqual(took, 9, "dropped before the stall limit")


class Roles(h.DaemonTestCase):
    """Peer credentials decide the role; needs root to act as another user."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("needs root to connect as another uid")
        os.chmod(self.tmp.path, 0o711)  # let the other uid reach the socket file

    @staticmethod
    def as_nobody():
        os.setgid(NOBODY)
        os.setgroups([])
        os.setuid(NOBODY)

    def test_unlisted_peer_reads_but_cannot_reload(self):
        d = self.start(mode="0666")
        r = d.ctl("--json", "status", preexec_fn=self.as_nobody)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["control"]["your_role"], "read")
        r = d.ctl("reload", preexec_fn=self.as_nobody)
        self.assertEqual(r.returncode, 1)
        self.assertIn("forbidden", r.stderr)
        self.assertIn("refused an admin command cmd=reload uid=%d" % NOBODY, d.read_log())

    def test_access_rule_grants_admin(self):
        d = self.start(mode="0666", access=['{ uid = %d; role = "admin"; }' % NOBODY])
        r = d.ctl("reload", preexec_fn=self.as_nobody)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_group_rule_grants_admin(self):
        d = self.start(mode="0666", access=['{ gid = %d; role = "admin"; }' % NOBODY])
        r = d.ctl("reload", preexec_fn=self.as_nobody)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_socket_mode_keeps_others_out(self):
        d = self.start()  # 0660, owned by root
        r = d.ctl("status", preexec_fn=self.as_nobody)
        self.assertEqual(r.returncode, 3)
        self.assertIn("Permission denied", r.stderr)


class Cadencectl(h.DaemonTestCase):
    def test_status_table_and_json(self):
        d = self.start()
        r = d.ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        for label in ("version", "pid", "uptime", "config", "store", "customers", "touches",
                      "scheduler"):
            self.assertRegex(r.stdout, r"(?m)^%s\s+\S" % label)
        values = [l[15:] for l in r.stdout.splitlines()]
        self.assertTrue(all(v and v[0] != " " for v in values), "one aligned column")
        r = d.ctl("--json", "status")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(json.loads(r.stdout)["pid"], d.proc.pid)
        r = d.ctl("status", "--json")
        self.assertEqual(json.loads(r.stdout)["pid"], d.proc.pid)

    def test_cadence_socket_environment(self):
        d = self.start()
        r = h.run_ctl(["status"], env={"CADENCE_SOCKET": d.socket})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_cannot_connect_exits_3_naming_the_path(self):
        path = self.tmp.join("nobody-here.sock")
        r = h.run_ctl(["--socket", path, "status"])
        self.assertEqual(r.returncode, 3)
        self.assertIn(path, r.stderr)

    def test_usage_errors_exit_2(self):
        for args in ([], ["frobnicate"], ["status", "extra"], ["--timeout", "0", "status"],
                     ["raw", "{not json"], ["raw", '{"no": "cmd"}']):
            r = h.run_ctl(["--socket", self.tmp.join("x.sock")] + args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertTrue(r.stderr.strip(), args)

    def test_help(self):
        r = h.run_ctl(["--help"])
        self.assertEqual(r.returncode, 0)
        for cmd in ("status", "reload", "raw"):
            self.assertRegex(r.stdout, r"(?m)^  %s\s" % cmd)
        r = h.run_ctl(["status", "--help"])
        self.assertEqual(r.returncode, 0)
        self.assertIn("Usage: cadencectl", r.stdout)
        r = h.run_ctl(["help", "reload"])
        self.assertEqual(r.returncode, 0)
        self.assertIn("reload", r.stdout)

    def test_error_reply_exits_1(self):
        d = self.start()
        r = d.ctl("raw", '{"cmd": "frobnicate"}')
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown_command", r.stderr)
        r = d.ctl("--json", "raw", '{"cmd": "frobnicate"}')
        self.assertEqual(r.returncode, 1)
        self.assertEqual(json.loads(r.stderr)["code"], "unknown_command")

    def test_raw_and_commands(self):
        d = self.start()
        r = d.ctl("raw", '{"cmd": "status"}')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^counts\.touches\.queued\s+0$")
        r = d.ctl("commands")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"(?m)^  reload\s+admin$")
        r = d.ctl("raw", '{"cmd": "help"}')  # a list of objects prints as a table
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^commands:\ncmd +role\nhelp +read\n")


if __name__ == "__main__":
    h.main()
