#!/usr/bin/env python3
"""The sms channel plugin against a loopback imitation of the Messages API.

A small http.server on 127.0.0.1 answers POST
/2010-04-01/Accounts/{sid}/Messages.json the way Twilio does, choosing its
answer by the To number. The plugin is loaded by the daemon's plugin host
through tests/plugins_bad/plugin_driver. Checks: the form fields and basic
auth; 201 is delivered with the message sid; 400 with error 21610 is
permanent and revokes SMS consent; 429 with Retry-After is a retry after
that many seconds; 5xx is retried; other 4xx are permanent with the
provider's message; an invalid E.164 number and a body over max_segments
are refused before any request; over https with a self-signed certificate,
delivered when ca_file names it and retried without it, and an unreadable
ca_file refused at load. Every step is bounded in time.
"""
import base64
import json
import os
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUILD_DIR = os.environ.get("CADENCE_BUILD_DIR", "build")
PLUGIN_DIR = os.environ.get("CADENCE_PLUGIN_BUILD_DIR", os.path.join(BUILD_DIR, "plugins"))
DRIVER = os.path.join(BUILD_DIR, "tests", "plugin_driver")
SEND_TIMEOUT = 30
ACCOUNT = "AC0123456789abcdef0123456789abcdef"
TOKEN = "tok-9f8e7d"

# To number -> (status, extra headers, JSON body)
ANSWERS = {
    "+447700900123": (201, {}, {"sid": "SM5f3c0a1b2c3d4e5f60718293a4b5c6d7", "status": "queued"}),
    "+447700900200": (200, {}, {"sid": "SMok200", "status": "accepted"}),
    "+447700900610": (400, {}, {"code": 21610, "status": 400,
                                "message": "Attempt to send to unsubscribed recipient",
                                "more_info": "https://www.twilio.com/docs/errors/21610"}),
    "+447700900211": (400, {}, {"code": 21211, "status": 400,
                                "message": "The 'To' number +447700900211 is not a valid "
                                           "phone number."}),
    "+447700900400": (400, {}, {"code": 21617, "status": 400,
                                "message": "The concatenated message body exceeds the 1600 "
                                           "character limit."}),
    "+447700900429": (429, {"Retry-After": "7"}, {"code": 20429, "status": 429,
                                                  "message": "Too Many Requests"}),
    "+447700900503": (503, {}, {"code": 20503, "status": 503,
                                "message": "Service Unavailable"}),
    "+447700900401": (401, {}, {"code": 20003, "status": 401,
                                "message": "Authentication Error - invalid username"}),
}


class MessagesAPI(BaseHTTPRequestHandler):
    requests = []
    lock = threading.Lock()

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8")
        form = urllib.parse.parse_qs(body, keep_blank_values=True, strict_parsing=True)
        with self.lock:
            self.requests.append({
                "path": self.path,
                "authorization": self.headers.get("Authorization", ""),
                "content_type": self.headers.get("Content-Type", ""),
                "idempotency_key": self.headers.get("Idempotency-Key", ""),
                "form": {k: v[0] for k, v in form.items()},
                "repeated": [k for k, v in form.items() if len(v) > 1],
            })
        status, headers, answer = ANSWERS.get(
            form.get("To", [""])[0],
            (400, {}, {"code": 21211, "status": 400, "message": "unknown test number"}))
        if self.path != "/2010-04-01/Accounts/%s/Messages.json" % ACCOUNT:
            status, headers, answer = 404, {}, {"code": 20404, "status": 404,
                                                "message": "The requested resource was not found"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class SmsPluginTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(DRIVER):
            raise RuntimeError("the driver %s is not built" % DRIVER)
        cls.tmp = tempfile.TemporaryDirectory()
        cls.credentials = os.path.join(cls.tmp.name, "credentials")
        os.mkdir(cls.credentials)
        with open(os.path.join(cls.credentials, "twilio-token"), "w") as f:
            f.write(TOKEN + "\n")
        cls.server = ThreadingHTTPServer(("127.0.0.1", 0), MessagesAPI)
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()
        cls.base_url = "http://127.0.0.1:%d" % cls.server.server_address[1]

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.tmp.cleanup()

    def setUp(self):
        with MessagesAPI.lock:
            MessagesAPI.requests.clear()

    def touch(self, phone="+447700900123", **overrides):
        """A touch in plugin_driver's flat JSON form."""
        t = {
            "idempotency_key": "c-9:renewal-nudge:e-12",
            "touch_id": 41,
            "customer_id": "c-9",
            "customer_name": "Bakery Lind",
            "contact_id": "p-3",
            "contact_name": "Jonas Lind",
            "first_name": "Jonas",
            "phone": phone,
            "rule": "renewal-nudge",
            "purpose": "ask",
            "text": "Hej Jonas! Your plan renews on 1 Dec. Reply STOP to opt out.",
            "decided_at": 1795424590,
            "attempt": 1,
        }
        t.update(overrides)
        return t

    def send(self, touch, settings=None, expect_load=True):
        """Loads the plugin with `settings` over the defaults (None removes
        one), sends `touch`, returns the outcome (or the load error)."""
        base = {
            "base_url": self.base_url,
            "account_sid": ACCOUNT,
            "auth_token_file": "twilio-token",
            "from": "+15557654321",
        }
        base.update(settings or {})
        args = [DRIVER, "--plugin-dir", PLUGIN_DIR, "--state-dir", self.tmp.name,
                "--plugin", "sms", "--address", "phone", "--timeout", "10",
                "--credentials-dir", self.credentials]
        for key, value in base.items():
            if value is not None:
                args += ["--set", "%s=%s" % (key, value)]
        proc = subprocess.run(args, input=json.dumps(touch) + "\n", capture_output=True,
                              text=True, timeout=SEND_TIMEOUT)
        self.assertEqual(proc.returncode, 0 if expect_load else 3, proc.stderr + proc.stdout)
        lines = proc.stdout.strip().splitlines()
        self.assertEqual(len(lines), 1, proc.stdout)
        return json.loads(lines[0])

    def requests(self):
        with MessagesAPI.lock:
            return list(MessagesAPI.requests)

    # ---- delivered -------------------------------------------------------------------

    def test_201_is_delivered_with_the_sid_and_the_form_is_right(self):
        out = self.send(self.touch())
        self.assertEqual(out["outcome"], "delivered", out)
        self.assertEqual(out["provider_id"], "SM5f3c0a1b2c3d4e5f60718293a4b5c6d7")
        reqs = self.requests()
        self.assertEqual(len(reqs), 1)
        req = reqs[0]
        self.assertEqual(req["path"], "/2010-04-01/Accounts/%s/Messages.json" % ACCOUNT)
        expected_auth = "Basic " + base64.b64encode(("%s:%s" % (ACCOUNT, TOKEN)).encode()).decode()
        self.assertEqual(req["authorization"], expected_auth)
        self.assertEqual(req["content_type"], "application/x-www-form-urlencoded")
        self.assertEqual(req["idempotency_key"], "c-9:renewal-nudge:e-12")
        self.assertEqual(req["form"], {
            "To": "+447700900123",
            "From": "+15557654321",
            "Body": "Hej Jonas! Your plan renews on 1 Dec. Reply STOP to opt out.",
        })
        self.assertEqual(req["repeated"], [])

    def test_messaging_service_status_callback_and_unicode_body(self):
        body = "Tack, Jonas! Vi har förbättrat leveranserna 🎉 & mer: 100%"
        out = self.send(self.touch(phone="+447700900200", text=body), {
            "from": None,
            "messaging_service_sid": "MG0123456789abcdef",
            "status_callback": "https://hooks.shop.example/sms-status?x=1",
        })
        self.assertEqual(out["outcome"], "delivered", out)
        self.assertEqual(out["provider_id"], "SMok200")
        form = self.requests()[0]["form"]
        self.assertEqual(form, {
            "To": "+447700900200",
            "MessagingServiceSid": "MG0123456789abcdef",
            "Body": body,
            "StatusCallback": "https://hooks.shop.example/sms-status?x=1",
        })

    # ---- provider refusals -------------------------------------------------------------

    def test_21610_is_permanent_and_revokes_consent(self):
        out = self.send(self.touch(phone="+447700900610"))
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertEqual(out["effect"], "consent_revoked")
        self.assertIn("21610", out["reason"])
        self.assertIn("Attempt to send to unsubscribed recipient", out["reason"])

    def test_invalid_number_reported_by_provider_marks_phone_unusable(self):
        out = self.send(self.touch(phone="+447700900211"))
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertEqual(out["effect"], "contact_unusable")
        self.assertIn("21211", out["reason"])

    def test_429_is_retried_after_retry_after(self):
        out = self.send(self.touch(phone="+447700900429"))
        self.assertEqual(out["outcome"], "retry", out)
        self.assertEqual(out["retry_after"], 7)
        self.assertIn("429", out["reason"])

    def test_5xx_is_retried(self):
        out = self.send(self.touch(phone="+447700900503"))
        self.assertEqual(out["outcome"], "retry", out)
        self.assertEqual(out["effect"], "none")
        self.assertIn("503", out["reason"])

    def test_other_4xx_is_permanent_with_the_providers_message(self):
        out = self.send(self.touch(phone="+447700900400"))
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertEqual(out["effect"], "none")
        self.assertIn("The concatenated message body exceeds the 1600 character limit.",
                      out["reason"])
        self.assertIn("21617", out["reason"])

    def test_401_disables_the_channel_not_the_contact(self):
        out = self.send(self.touch(phone="+447700900401"))
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertEqual(out["effect"], "channel_disabled", out)
        self.assertIn("credentials", out["reason"])

    def test_wrong_account_path_is_permanent(self):
        out = self.send(self.touch(), {"account_sid": "AC999"})
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertIn("404", out["reason"])
        self.assertIn("The requested resource was not found", out["reason"])

    # ---- refused before any request -------------------------------------------------------

    def test_invalid_e164_is_refused_before_any_request(self):
        for phone in ["07700 900123", "+44 7700 900123", "447700900123", "+0447700900",
                      "+4477009001234567"]:
            out = self.send(self.touch(phone=phone))
            self.assertEqual(out["outcome"], "permanent", out)
            self.assertEqual(out["effect"], "contact_unusable")
            self.assertIn('"%s"' % phone, out["reason"])
            self.assertIn("not E.164", out["reason"])
        self.assertEqual(self.requests(), [])

    def test_too_many_segments_is_refused_before_any_request(self):
        gsm = "a" * 459  # exactly 3 GSM-7 segments: accepted with the default max_segments 3
        self.assertEqual(self.send(self.touch(text=gsm))["outcome"], "delivered")
        out = self.send(self.touch(text=gsm + "a"))
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertIn("4 GSM-7 segments (460 septets)", out["reason"])
        out = self.send(self.touch(text="€" * 81), {"max_segments": "1"})
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertIn("2 GSM-7 segments (162 septets)", out["reason"])
        out = self.send(self.touch(text="ł" * 71), {"max_segments": "1"})
        self.assertEqual(out["outcome"], "permanent", out)
        self.assertIn("2 UCS-2 segments (71 UTF-16 units)", out["reason"])
        self.assertEqual(len(self.requests()), 1)  # only the accepted one

    def test_bad_settings_stop_the_channel_with_a_reason(self):
        out = self.send(self.touch(), {"from": None}, expect_load=False)
        self.assertIn("set exactly one of from and messaging_service_sid", out["error"])
        out = self.send(self.touch(), {"auth_token_file": None}, expect_load=False)
        self.assertIn("auth_token_file", out["error"])
        out = self.send(self.touch(), {"max_segments": "0"}, expect_load=False)
        self.assertIn("max_segments 0 is outside 1 to 10", out["error"])
        self.assertEqual(self.requests(), [])

    def test_server_gone_is_retried(self):
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        started = time.monotonic()
        out = self.send(self.touch(), {"base_url": "http://127.0.0.1:%d" % port})
        self.assertEqual(out["outcome"], "retry", out)
        self.assertLess(time.monotonic() - started, SEND_TIMEOUT)

    def test_https_verifies_the_api_with_ca_file(self):
        cert = os.path.join(self.tmp.name, "api-cert.pem")
        key = os.path.join(self.tmp.name, "api-key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True,
                       timeout=60)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), MessagesAPI)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        https_url = "https://127.0.0.1:%d" % server.server_address[1]

        out = self.send(self.touch(), {"base_url": https_url, "ca_file": cert})
        self.assertEqual(out["outcome"], "delivered", out)
        self.assertEqual(len(self.requests()), 1)
        self.assertEqual(self.requests()[0]["form"]["To"], "+447700900123")

        out = self.send(self.touch(), {"base_url": https_url})
        self.assertEqual(out["outcome"], "retry", out)
        self.assertIn("certificate", out["reason"])
        self.assertEqual(len(self.requests()), 1)  # nothing reached an unverified server

        missing = os.path.join(self.tmp.name, "no-such-ca.pem")
        out = self.send(self.touch(), {"base_url": https_url, "ca_file": missing},
                        expect_load=False)
        self.assertIn('ca_file "%s" cannot be read' % missing, out["error"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
