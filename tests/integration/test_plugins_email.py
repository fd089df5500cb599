#!/usr/bin/env python3
"""The email channel plugin against a real SMTP server on loopback.

An aiosmtpd server (Debian's python3-aiosmtpd) listens on 127.0.0.1 at a free
port; the plugin is loaded by the daemon's plugin host through
tests/plugins_bad/plugin_driver, which sends the touch given on stdin and
prints the outcome. Checks: the message arrives with every header right (RFC 2047
subject and display name, Date, Message-ID, List-Unsubscribe with one-click,
the idempotency header), as multipart/alternative text + HTML, after SMTP
AUTH with the password from a secret file; 550 to RCPT is permanent and marks
the address unusable; 451 is retried; a subject with CRLF is refused and the
server sees no connection; STARTTLS required but not offered is retried and
nothing is sent; with a TLS server, STARTTLS and implicit TLS (smtps://)
deliver after verifying the certificate against ca_file, and an untrusted
certificate is retried unsent. Every step is bounded in time.
"""
import email
import email.policy
import email.utils
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import warnings

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
except ImportError:  # python3 from elsewhere than Debian: use Debian's package
    sys.path.append("/usr/lib/python3/dist-packages")
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

# aiosmtpd 1.4 warns about its own deprecated Session.login_data on every AUTH
warnings.filterwarnings("ignore", category=DeprecationWarning)
# the untrusted-certificate test makes aiosmtpd log a handshake traceback
logging.getLogger("mail.log").setLevel(logging.CRITICAL)

BUILD_DIR = os.environ.get("CADENCE_BUILD_DIR", "build")
PLUGIN_DIR = os.environ.get("CADENCE_PLUGIN_BUILD_DIR", os.path.join(BUILD_DIR, "plugins"))
DRIVER = os.path.join(BUILD_DIR, "tests", "plugin_driver")
SEND_TIMEOUT = 30

SUBJECT = "Merci, Zoë — voici ce que nous avons fait de votre avis sur nos livraisons 🎉"
TO_NAME = "Zoë Müller"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Handler:
    """Records what arrives; `rcpt_reply` / `data_reply` script the answers."""

    def __init__(self):
        self.rcpt_reply = "250 2.1.5 Ok"
        self.data_reply = "250 2.0.0 Ok: queued as Q123ABC"
        self.messages = []
        self.ehlos = 0
        self.logins = []
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.rcpt_reply.startswith("250"):
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return self.rcpt_reply

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply.startswith("250"):
            with self.lock:
                self.messages.append(
                    {
                        "mail_from": envelope.mail_from,
                        "rcpt_tos": list(envelope.rcpt_tos),
                        "content": envelope.original_content or envelope.content,
                        "starttls": session.ssl is not None,
                    }
                )
        return self.data_reply

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        with self.lock:
            self.logins.append((auth_data.login, auth_data.password))
        if auth_data.password == b"s3cret-pass":
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)  # answer 535


class EmailPluginTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(DRIVER):
            raise RuntimeError("the driver %s is not built" % DRIVER)
        cls.tmp = tempfile.TemporaryDirectory()
        cls.credentials = os.path.join(cls.tmp.name, "credentials")
        os.mkdir(cls.credentials)
        with open(os.path.join(cls.credentials, "smtp-password"), "w") as f:
            f.write("s3cret-pass\n")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.handler = Handler()
        self.port = free_port()
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self.handler.authenticate,
            auth_require_tls=False,
            decode_data=False,
        )
        self.controller.start()

    def tearDown(self):
        self.controller.stop()

    def touch(self, **overrides):
        """A touch in plugin_driver's flat JSON form."""
        t = {
            "idempotency_key": "c-77:feedback-followup:e-901",
            "touch_id": 17,
            "customer_id": "c-77",
            "customer_name": "Müller GmbH",
            "contact_id": "p-5",
            "contact_name": TO_NAME,
            "first_name": "Zoë",
            "email": "zoe@example.org",
            "rule": "feedback-followup",
            "purpose": "followup",
            "subject": SUBJECT,
            "text": "Hallo Zoë,\nwir liefern jetzt zweimal pro Woche.\n",
            "html": "<p>Hallo Zoë,</p><p>wir liefern jetzt <b>zweimal</b> pro Woche.</p>",
            "unsubscribe_url": "https://shop.example/u/c-77",
            "unsubscribe_mailto": "unsubscribe@shop.example",
            "decided_at": 1795424590,
            "attempt": 1,
        }
        t.update(overrides)
        return t

    def send(self, touch, settings=None, expect_load=True):
        """Loads the plugin with `settings` over the defaults (None removes
        one), sends `touch`, returns the outcome (or the load error)."""
        base = {
            "url": "smtp://127.0.0.1:%d/cadence.test" % self.port,
            "starttls": "off",
            "from": "hello@shop.example",
            "from_name": "Corner Shop",
            "username": "mailer",
            "password_file": "smtp-password",
        }
        base.update(settings or {})
        args = [DRIVER, "--plugin-dir", PLUGIN_DIR, "--state-dir", self.tmp.name,
                "--plugin", "email", "--address", "email", "--timeout", "10",
                "--credentials-dir", self.credentials]
        for key, value in base.items():
            if value is not None:
                args += ["--set", "%s=%s" % (key, value)]
        started = time.monotonic()
        proc = subprocess.run(args, input=json.dumps(touch) + "\n", capture_output=True,
                              text=True, timeout=SEND_TIMEOUT)
        self.elapsed = time.monotonic() - started
        self.assertEqual(proc.returncode, 0 if expect_load else 3, proc.stderr + proc.stdout)
        lines = proc.stdout.strip().splitlines()
        self.assertEqual(len(lines), 1, proc.stdout)
        return json.loads(lines[0])

    # ---- delivered -------------------------------------------------------------------

    def test_message_arrives_with_every_header(self):
        out = self.send(self.touch())
        self.assertEqual(out["outcome"], "delivered", out)
        self.assertEqual(out["provider_id"], "Q123ABC")
        self.assertEqual(len(self.handler.messages), 1)
        got = self.handler.messages[0]
        self.assertEqual(got["mail_from"], "hello@shop.example")
        self.assertEqual(got["rcpt_tos"], ["zoe@example.org"])
        self.assertEqual(self.handler.logins, [(b"mailer", b"s3cret-pass")])

        raw = got["content"]
        head = raw.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            self.assertLessEqual(len(line), 76, line)
            line.decode("ascii")  # 7-bit clean headers

        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(str(msg["Subject"]), SUBJECT)
        self.assertIn(b"Subject: =?UTF-8?B?", head)
        self.assertIn(b"\r\n =?UTF-8?B?", head)  # folded into several encoded-words
        self.assertEqual(msg["To"].addresses[0].display_name, TO_NAME)
        self.assertEqual(msg["To"].addresses[0].addr_spec, "zoe@example.org")
        self.assertEqual(msg["From"].addresses[0].display_name, "Corner Shop")
        self.assertEqual(msg["From"].addresses[0].addr_spec, "hello@shop.example")
        date = email.utils.parsedate_to_datetime(str(msg["Date"]))
        self.assertLess(abs(date.timestamp() - time.time()), 120)
        self.assertRegex(str(msg["Message-ID"]), r"^<[0-9a-f]{32}@shop\.example>$")
        self.assertEqual(str(msg["X-Cadence-Idempotency-Key"]), "c-77:feedback-followup:e-901")
        self.assertEqual(
            str(msg["List-Unsubscribe"]),
            "<mailto:unsubscribe@shop.example>, <https://shop.example/u/c-77>",
        )
        self.assertEqual(str(msg["List-Unsubscribe-Post"]), "List-Unsubscribe=One-Click")
        self.assertEqual(str(msg["MIME-Version"]), "1.0")

        self.assertEqual(msg.get_content_type(), "multipart/alternative")
        parts = list(msg.iter_parts())
        self.assertEqual([p.get_content_type() for p in parts], ["text/plain", "text/html"])
        for part in parts:
            self.assertEqual(part.get_content_charset(), "utf-8")
            self.assertEqual(part["Content-Transfer-Encoding"], "quoted-printable")
        self.assertEqual(parts[0].get_content().replace("\r\n", "\n"),
                         "Hallo Zoë,\nwir liefern jetzt zweimal pro Woche.\n")
        self.assertEqual(parts[1].get_content().rstrip("\r\n"),
                         "<p>Hallo Zoë,</p><p>wir liefern jetzt <b>zweimal</b> pro Woche.</p>")

    def test_same_touch_gives_same_message_id(self):
        self.send(self.touch())
        self.send(self.touch())
        self.send(self.touch(idempotency_key="c-77:feedback-followup:e-902"))
        ids = [email.message_from_bytes(m["content"], policy=email.policy.default)["Message-ID"]
               for m in self.handler.messages]
        self.assertEqual(ids[0], ids[1])
        self.assertNotEqual(ids[0], ids[2])

    def test_text_only_touch_and_unsubscribe_from_settings(self):
        touch = self.touch(html="", unsubscribe_url="", unsubscribe_mailto="")
        out = self.send(touch, {
            "unsubscribe_url": "https://shop.example/unsubscribe/{{customer.id}}",
            "unsubscribe_mailto": "leave+{{customer.id}}@shop.example",
            "reply_to": "care@shop.example",
        })
        self.assertEqual(out["outcome"], "delivered", out)
        msg = email.message_from_bytes(self.handler.messages[0]["content"],
                                       policy=email.policy.default)
        self.assertEqual(msg.get_content_type(), "text/plain")
        self.assertEqual(str(msg["Reply-To"]), "care@shop.example")
        self.assertEqual(
            str(msg["List-Unsubscribe"]),
            "<mailto:leave+c-77@shop.example>, <https://shop.example/unsubscribe/c-77>",
        )
        self.assertEqual(str(msg["List-Unsubscribe-Post"]), "List-Unsubscribe=One-Click")

    def test_template_shows_the_same_unsubscribe_link_as_the_header(self):
        touch = self.touch(unsubscribe_url="", unsubscribe_mailto="", subject="", text="", html="",
                           template={"subject": "News for {{customer.name}}",
                                     "text": "Hi {{contact.first_name}}\n"
                                             "Unsubscribe: {{unsubscribe_url}}\n",
                                     "html": "<p><a href=\"{{unsubscribe_url}}\">Unsubscribe"
                                             "</a> or write to {{unsubscribe_mailto}}</p>"})
        out = self.send(touch, {
            "unsubscribe_url": "https://shop.example/u/{{customer.id}}?c={{contact.id}}",
            "unsubscribe_mailto": "leave+{{customer.id}}@shop.example",
        })
        self.assertEqual(out["outcome"], "delivered", out)
        msg = email.message_from_bytes(self.handler.messages[0]["content"],
                                       policy=email.policy.default)
        self.assertEqual(
            str(msg["List-Unsubscribe"]),
            "<mailto:leave+c-77@shop.example>, <https://shop.example/u/c-77?c=p-5>")
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        self.assertIn("Unsubscribe: https://shop.example/u/c-77?c=p-5\r\n", text)
        self.assertIn('href="https://shop.example/u/c-77?c=p-5"', html)
        self.assertIn("write to leave+c-77@shop.example", html)

    def test_unsubscribe_settings_percent_encode_the_values_they_insert(self):
        # Such ids are valid customer and contact ids; the links must still
        # be valid URIs, so each value is encoded as a URI component while
        # the operator's template text stays as written.
        touch = self.touch(customer_id="café büro", contact_id="sp ace", unsubscribe_url="",
                           unsubscribe_mailto="", subject="", text="", html="",
                           template={"subject": "News",
                                     "text": "Unsubscribe: {{unsubscribe_url}}\n"})
        out = self.send(touch, {
            "unsubscribe_url": "https://shop.example/u/{{customer.id}}?c={{contact.id}}",
            "unsubscribe_mailto": "unsub+{{contact.id}}.{{customer.id}}@shop.example",
        })
        self.assertEqual(out["outcome"], "delivered", out)
        raw = self.handler.messages[0]["content"]
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(
            str(msg["List-Unsubscribe"]),
            "<mailto:unsub+sp%20ace.caf%C3%A9%20b%C3%BCro@shop.example>, "
            "<https://shop.example/u/caf%C3%A9%20b%C3%BCro?c=sp%20ace>")
        self.assertIn("Unsubscribe: https://shop.example/u/caf%C3%A9%20b%C3%BCro?c=sp%20ace",
                      msg.get_body(("plain",)).get_content())
        # the literal text is still checked: a space written in the template
        out = self.send(touch, {"unsubscribe_url": "https://shop.example/u /{{customer.id}}"})
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertIn("not allowed in a URI", out["reason"])

    # ---- refusals and failures ---------------------------------------------------------

    def test_550_to_rcpt_is_permanent_and_marks_address_unusable(self):
        self.handler.rcpt_reply = "550 5.1.1 <zoe@example.org>: mailbox unavailable"
        out = self.send(self.touch())
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertEqual(out["effect"], "contact_unusable")
        self.assertIn("550 5.1.1", out["reason"])
        self.assertIn("zoe@example.org", out["reason"])
        self.assertEqual(self.handler.messages, [])

    def test_451_is_retried(self):
        self.handler.rcpt_reply = "451 4.3.0 greylisted, try again later"
        out = self.send(self.touch())
        self.assertEqual(out["outcome"], "retry", out)
        self.assertEqual(out["effect"], "none")
        self.assertIn("451 4.3.0", out["reason"])
        self.assertEqual(self.handler.messages, [])

    def test_451_after_data_is_retried(self):
        self.handler.data_reply = "451 4.7.1 queue full"
        out = self.send(self.touch())
        self.assertEqual(out["outcome"], "retry", out)
        self.assertIn("451 4.7.1", out["reason"])

    def test_554_after_data_is_permanent_for_this_message_only(self):
        self.handler.data_reply = "554 5.7.1 message refused"
        out = self.send(self.touch())
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertEqual(out["effect"], "none")
        self.assertIn("554 5.7.1", out["reason"])

    def test_subject_with_crlf_is_refused_and_nothing_reaches_the_server(self):
        out = self.send(self.touch(subject="Hello\r\nBcc: everyone@example.org"))
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertEqual(out["reason"], "header injection refused in subject")
        out = self.send(self.touch(contact_name="Zoë\nBcc: x@example.org"))
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertEqual(out["reason"], "header injection refused in to name")
        self.assertEqual(self.handler.ehlos, 0)
        self.assertEqual(self.handler.messages, [])

    def test_starttls_required_but_not_offered_is_retried_unsent(self):
        out = self.send(self.touch(), {"starttls": None})
        self.assertEqual(out["outcome"], "retry", out)
        self.assertIn("STARTTLS", out["reason"])
        self.assertEqual(self.handler.messages, [])
        self.assertEqual(self.handler.logins, [])  # the password never went out in clear

    def fake_server(self, answer):
        """A one-connection SMTP server on loopback that greets, advertises
        STARTTLS and AUTH PLAIN, and answers every other command with
        answer(command) (bytes, or None for "503 bad sequence"); returns
        the URL and the socket to close."""
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)

        def serve():
            conn, _ = srv.accept()
            with conn:
                f = conn.makefile("rb")
                conn.sendall(b"220 fake ESMTP\r\n")
                for line in f:
                    cmd = line.strip().upper()
                    if cmd.startswith(b"EHLO"):
                        conn.sendall(b"250-fake\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n")
                    elif cmd == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        return
                    else:
                        conn.sendall(answer(cmd) or b"503 5.5.1 bad sequence\r\n")

        threading.Thread(target=serve, daemon=True).start()
        return "smtp://127.0.0.1:%d/cadence.test" % srv.getsockname()[1], srv

    def test_starttls_offered_then_refused_says_so(self):
        # A server that advertises STARTTLS and then answers 454: the reason
        # quotes the refusal instead of claiming STARTTLS was not offered.
        url, srv = self.fake_server(
            lambda cmd: b"454 4.7.0 TLS not available due to temporary reason\r\n"
            if cmd == b"STARTTLS" else None)
        try:
            out = self.send(self.touch(), {"starttls": None, "url": url})
        finally:
            srv.close()
        self.assertEqual(out["outcome"], "retry", out)
        self.assertIn("refused STARTTLS", out["reason"])
        self.assertIn("454 4.7.0 TLS not available", out["reason"])
        self.assertNotIn("did not offer", out["reason"])

    def test_a_temporary_auth_failure_is_retried_not_the_channel_disabled(self):
        # RFC 4954: 454 to AUTH is temporary (the provider's auth backend is
        # down); only a 5xx says the credentials are wrong.
        url, srv = self.fake_server(
            lambda cmd: b"454 4.7.0 Temporary authentication failure\r\n"
            if cmd.startswith(b"AUTH") else None)
        try:
            out = self.send(self.touch(), {"url": url})
        finally:
            srv.close()
        self.assertEqual(out["outcome"], "retry", out)
        self.assertEqual(out.get("effect", "none"), "none", out)
        self.assertIn("454 4.7.0 Temporary authentication failure", out["reason"])

    def test_wrong_password_disables_the_channel_not_the_contact(self):
        with open(os.path.join(self.credentials, "wrong-password"), "w") as f:
            f.write("nope\n")
        out = self.send(self.touch(), {"password_file": "wrong-password"})
        # 535: the channel fails for every touch until the password is fixed
        # and the channel reloaded; the contact's address is not blamed.
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertEqual(out["effect"], "channel_disabled", out)
        self.assertIn("authentication refused", out["reason"])
        self.assertEqual(self.handler.messages, [])

    def test_bad_settings_stop_the_channel_with_a_reason(self):
        out = self.send(self.touch(), {"url": "http://127.0.0.1:%d" % self.port},
                        expect_load=False)
        self.assertIn("must start with smtp:// or smtps://", out["error"])
        out = self.send(self.touch(), {"fromm": "x@y.z"}, expect_load=False)
        self.assertIn('plugin email has no option "fromm"', out["error"])
        out = self.send(self.touch(), {"unsubscribe_url": "https://shop.example/u/{{contact.idd}}"},
                        expect_load=False)
        self.assertIn("option unsubscribe_url: ", out["error"])
        self.assertIn("contact.idd", out["error"])
        # Values are percent-encoded: the mailto's "@" and domain must be literal.
        for mailto in ("{{contact.email}}", "mailto:{{contact.email}}"):
            out = self.send(self.touch(unsubscribe_mailto=""), {"unsubscribe_mailto": mailto},
                            expect_load=False)
            self.assertIn('"@" and domain must be written in the setting', out["error"])
        out = self.send(self.touch(unsubscribe_mailto=""),
                        {"unsubscribe_mailto": "unsub+{{contact.id}}@shop.example"})
        self.assertEqual(out["outcome"], "delivered", out)

    def test_server_that_never_answers_is_retried_within_the_timeout(self):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        try:
            out = self.send(self.touch(),
                            {"url": "smtp://127.0.0.1:%d" % silent.getsockname()[1]})
        finally:
            silent.close()
        self.assertEqual(out["outcome"], "retry", out)
        self.assertLess(self.elapsed, SEND_TIMEOUT)


class EmailTlsTest(unittest.TestCase):
    """STARTTLS and smtps:// against a server with a self-signed certificate."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(DRIVER):
            raise RuntimeError("the driver %s is not built" % DRIVER)
        cls.tmp = tempfile.TemporaryDirectory()
        cls.cert = os.path.join(cls.tmp.name, "cert.pem")
        key = os.path.join(cls.tmp.name, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cls.cert],
                       check=True, capture_output=True, timeout=60)
        cls.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cls.context.load_cert_chain(cls.cert, key)
        cls.credentials = os.path.join(cls.tmp.name, "credentials")
        os.mkdir(cls.credentials)
        with open(os.path.join(cls.credentials, "smtp-password"), "w") as f:
            f.write("s3cret-pass\n")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def start(self, implicit):
        self.handler = Handler()
        self.port = free_port()
        kwargs = {"ssl_context": self.context} if implicit else {
            "tls_context": self.context, "require_starttls": True}
        controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                authenticator=self.handler.authenticate, decode_data=False,
                                **kwargs)
        controller.start()
        self.addCleanup(controller.stop)

    def send(self, url, ca_file, expect_load=True):
        args = [DRIVER, "--plugin-dir", PLUGIN_DIR, "--state-dir", self.tmp.name,
                "--plugin", "email", "--address", "email", "--timeout", "10",
                "--credentials-dir", self.credentials,
                "--set", "url=" + url, "--set", "from=hello@shop.example",
                "--set", "username=mailer", "--set", "password_file=smtp-password"]
        if ca_file:
            args += ["--set", "ca_file=" + ca_file]
        touch = {"touch_id": 1, "idempotency_key": "tls-1", "contact_name": "Ada",
                 "email": "ada@example.org", "subject": "Over TLS", "text": "Hello",
                 "attempt": 1}
        proc = subprocess.run(args, input=json.dumps(touch) + "\n", capture_output=True,
                              text=True, timeout=SEND_TIMEOUT)
        self.assertEqual(proc.returncode, 0 if expect_load else 3, proc.stderr + proc.stdout)
        return json.loads(proc.stdout.strip().splitlines()[0])

    def test_starttls_upgrades_before_auth_and_delivers(self):
        self.start(implicit=False)
        out = self.send("smtp://127.0.0.1:%d" % self.port, self.cert)
        self.assertEqual(out["outcome"], "delivered", out)
        self.assertEqual(len(self.handler.messages), 1)
        self.assertTrue(self.handler.messages[0]["starttls"])
        self.assertEqual(self.handler.logins, [(b"mailer", b"s3cret-pass")])

    def test_implicit_tls_delivers(self):
        self.start(implicit=True)
        out = self.send("smtps://127.0.0.1:%d" % self.port, self.cert)
        self.assertEqual(out["outcome"], "delivered", out)
        self.assertEqual(len(self.handler.messages), 1)

    def test_untrusted_certificate_is_retried_unsent(self):
        self.start(implicit=False)
        out = self.send("smtp://127.0.0.1:%d" % self.port, None)
        self.assertEqual(out["outcome"], "retry", out)
        self.assertEqual(self.handler.messages, [])
        self.assertEqual(self.handler.logins, [])

    def test_unreadable_ca_file_stops_the_channel_at_load(self):
        self.start(implicit=False)
        missing = os.path.join(self.tmp.name, "no-such-ca.pem")
        out = self.send("smtp://127.0.0.1:%d" % self.port, missing, expect_load=False)
        self.assertIn('ca_file "%s" cannot be read' % missing, out["error"])
        out = self.send("smtp://127.0.0.1:%d" % self.port, self.tmp.name, expect_load=False)
        self.assertIn('ca_file "%s" cannot be read: not a regular file' % self.tmp.name,
                      out["error"])
        self.assertEqual(self.handler.messages, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
