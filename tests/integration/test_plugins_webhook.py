#!/usr/bin/env python3
"""The webhook plugin against a loopback HTTP receiver.

The plugin is loaded by the test host driver (tests/plugins_bad/plugin_driver.c,
the daemon's own plugin_host.c) and its requests land on a Python receiver that
checks the Standard Webhooks signature independently with hmac/hashlib. Each
scenario maps one receiver behaviour to the outcome the plugin must report:
200 delivered, 410 permanent (endpoint disabled), 500 + Retry-After retry,
429 + HTTP-date Retry-After retry, 400 retry, 302 retry and not
followed, a hanging receiver retry after the timeout. Over https, against a
receiver with a self-signed certificate: delivered when ca_file names it,
over kept-alive TLS connections; a retry naming the certificate without it;
an unreadable ca_file refused at load.
"""
import base64
import email.utils
import hashlib
import hmac
import http.server
import json
import os
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = base64.b64decode(SECRET[len("whsec_"):])

received = []  # (path, headers dict, body bytes)
lock = threading.Lock()


class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, headers=None, body=b""):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with lock:
            received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        path = self.path
        if path == "/ok":
            self.reply(200, {"X-Request-Id": "rcv-123"}, b'{"ok": true}')
        elif path == "/gone":
            self.reply(410, body=b"gone")
        elif path == "/busy":
            self.reply(500, {"Retry-After": "120"}, b"busy")
        elif path == "/forever":
            self.reply(503, {"Retry-After": "99999999999999999999"}, b"later")
        elif path == "/slow-down":
            when = email.utils.formatdate(time.time() + 600, usegmt=True)
            self.reply(429, {"Retry-After": when}, b"slow down")
        elif path == "/bad":
            self.reply(400, body=b"bad request")
        elif path == "/redirect":
            self.reply(302, {"Location": "/elsewhere"})
        elif path == "/elsewhere":
            self.reply(200)
        elif path == "/hang":
            time.sleep(4)
            self.reply(200)
        else:
            self.reply(404)


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def expected_signature(headers, body):
    """Standard Webhooks 1.0, computed here without any project code."""
    msg_id = headers.get("webhook-id", "")
    ts = headers.get("webhook-timestamp", "")
    return base64.b64encode(
        hmac.new(KEY, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()


def signature_ok(headers, body):
    versions = dict(part.split(",", 1) for part in headers.get("webhook-signature", "").split(" ")
                    if "," in part)
    return hmac.compare_digest(versions.get("v1", ""), expected_signature(headers, body))


def verify_signature(headers, body):
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sig = headers.get("webhook-signature")
    check(msg_id and ts and sig, "signature headers missing: %r" % headers)
    check(abs(int(ts) - time.time()) < 120, "webhook-timestamp %s is not now" % ts)
    check(signature_ok(headers, body), "signature %s does not match the expected v1,%s"
          % (sig, expected_signature(headers, body)))
    return msg_id


def touch(touch_id, key, attempt=1):
    return {
        "touch_id": touch_id, "idempotency_key": key, "attempt": attempt,
        "customer_id": "acme", "customer_name": "Acme & Co",
        "attributes": {"plan": "gold", "seats": 12},
        "contact_id": "c-1", "contact_name": "Ada Lovelace", "first_name": "Ada",
        "email": "ada@example.com", "phone": "+15550100",
        "rule": "feedback_followup", "purpose": "followup",
        "content_id": "changelog", "content_title": "What we changed",
        "content_url": "https://example.com/changes",
        "unsubscribe_url": "https://example.com/u/1",
        "decided_at": 1790000000,
        "template": {"subject": "Thanks, {{contact.first_name}}",
                     "text": "We acted on your feedback: {{content.url}}",
                     "html": "<p>{{customer.name}}</p>"},
    }


def drive(driver, plugin_dir, state, creds, url, touches, extra=()):
    args = [driver, "--plugin-dir", plugin_dir, "--state-dir", state, "--credentials-dir", creds,
            "--plugin", "webhook", "--channel", "crm", "--timeout", "10",
            "--set", "url=" + url, "--set", "secret_file=webhook.key", *extra]
    stdin = "".join(json.dumps(t) + "\n" for t in touches)
    p = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        fail("driver exited %d: %s %s" % (p.returncode, p.stdout, p.stderr))
    outs = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    check(len(outs) == len(touches), "expected %d outcomes, got %r" % (len(touches), outs))
    check("whsec_" not in p.stderr and "MfKQ9r8" not in p.stderr, "the secret was logged")
    return {o["touch_id"]: o for o in outs}, p.stderr


class CountingServer(http.server.ThreadingHTTPServer):
    """Counts the connections it accepts (TLS handshakes, once wrapped)."""
    daemon_threads = True
    connections = 0

    def process_request(self, request, client_address):
        CountingServer.connections += 1
        socketserver.ThreadingMixIn.process_request(self, request, client_address)


def https_cases(driver, plugin_dir, state, creds, tmp):
    cert = os.path.join(tmp, "cert.pem")
    key = os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = CountingServer(("127.0.0.1", 0), Receiver)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = "https://127.0.0.1:%d" % server.server_address[1]
    try:
        # ca_file names the receiver's certificate: delivered, signed, and
        # eight touches one at a time share a kept-alive TLS connection
        before = len(received)
        touches = [touch(40 + i, "tls-%d" % i) for i in range(8)]
        outs, _ = drive(driver, plugin_dir, state, creds, base + "/ok", touches,
                        extra=("--set", "ca_file=" + cert, "--concurrency", "1"))
        for t in touches:
            o = outs[t["touch_id"]]
            check(o["outcome"] == "delivered", "https with ca_file: %r" % o)
        check(len(received) == before + 8, "expected 8 requests over https")
        for _, headers, body in received[before:]:
            verify_signature(headers, body)
        check(CountingServer.connections <= 2,
              "8 touches took %d TLS connections" % CountingServer.connections)

        # without ca_file the system's CAs do not know the receiver: a retry
        # naming the certificate, nothing received
        before = len(received)
        outs, _ = drive(driver, plugin_dir, state, creds, base + "/ok", [touch(50, "tls-x")])
        o = outs[50]
        check(o["outcome"] == "retry" and "certificate" in o["reason"],
              "https without ca_file: %r" % o)
        check(len(received) == before, "a request went to an unverified server")
    finally:
        server.shutdown()
        server.server_close()

    # an unreadable ca_file fails the load, naming it
    missing = os.path.join(tmp, "no-such-ca.pem")
    p = subprocess.run([driver, "--plugin-dir", plugin_dir, "--state-dir", state,
                        "--credentials-dir", creds, "--plugin", "webhook",
                        "--set", "url=" + base + "/ok", "--set", "secret_file=webhook.key",
                        "--set", "ca_file=" + missing],
                       input="", capture_output=True, text=True, timeout=30)
    check(p.returncode == 3, "a missing ca_file must fail the load: %d %s"
          % (p.returncode, p.stdout))
    check(missing in p.stdout and "cannot be read" in p.stdout,
          "the load error must name the file: %s" % p.stdout)
    p = subprocess.run([driver, "--plugin-dir", plugin_dir, "--state-dir", state,
                        "--credentials-dir", creds, "--plugin", "webhook",
                        "--set", "url=" + base + "/ok", "--set", "secret_file=webhook.key",
                        "--set", "ca_file=" + tmp],
                       input="", capture_output=True, text=True, timeout=30)
    check(p.returncode == 3 and "not a regular file" in p.stdout,
          "a directory as ca_file must fail the load: %d %s" % (p.returncode, p.stdout))


def main():
    build = os.environ["CADENCE_BUILD_DIR"]
    plugin_dir = os.environ.get("CADENCE_PLUGIN_BUILD_DIR", os.path.join(build, "plugins"))
    driver = os.path.join(build, "tests", "plugin_driver")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = "http://127.0.0.1:%d" % server.server_address[1]

    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "state")
        creds = os.path.join(tmp, "creds")
        os.makedirs(state)
        os.makedirs(creds)
        with open(os.path.join(creds, "webhook.key"), "w") as f:
            f.write(SECRET + "\n")

        # 200: delivered, signed, the documented body; a retry keeps the webhook-id
        outs, log = drive(driver, plugin_dir, state, creds, base + "/ok",
                          [touch(1, "acme:feedback_followup:17"),
                           touch(2, "acme:feedback_followup:17", attempt=2)])
        # the URL's path may carry a token: only scheme and host are logged
        check("webhook[crm]: posting signed touches endpoint=%s\n" % base in log,
              "the endpoint log line is missing or shows the path:\n" + log)
        check(outs[1]["outcome"] == "delivered", "200 must be delivered: %r" % outs[1])
        check(outs[1]["provider_id"] == "rcv-123", "provider id from X-Request-Id: %r" % outs[1])
        check(len(received) == 2, "expected 2 requests, got %d" % len(received))
        ids = set()
        for path, headers, body in received:
            ids.add(verify_signature(headers, body))
            check(headers.get("content-type") == "application/json", "content type")
            doc = json.loads(body)
            check(doc["type"] == "touch.decided", "type: %r" % doc)
            data = doc["data"]
            check(data["idempotency_key"] == "acme:feedback_followup:17", "key")
            check(data["customer"] == {"id": "acme", "name": "Acme & Co",
                                       "attributes": {"plan": "gold", "seats": 12}},
                  "customer: %r" % data["customer"])
            check(data["contact"]["first_name"] == "Ada", "contact")
            check(data["message"]["subject"] == "Thanks, Ada", "rendered subject")
            check(data["message"]["html"] == "<p>Acme &amp; Co</p>", "escaped html")
            check(data["rule"] == "feedback_followup" and data["purpose"] == "followup", "rule")
            check(data["decided_at"] == "2026-09-21T14:13:20Z", "decided_at %r" % data["decided_at"])
        check(ids == {"acme:feedback_followup:17"}, "webhook-id must be the idempotency key: %r" % ids)
        check(sorted(json.loads(b)["data"]["attempt"] for _, _, b in received) == [1, 2], "attempts")

        # a tampered body must fail the independent check (the check is real)
        path, headers, body = received[0]
        check(not signature_ok(headers, body + b" "), "a tampered body passed the signature check")
        tampered = dict(headers, **{"webhook-id": "someone-else"})
        check(not signature_ok(tampered, body), "a changed webhook-id passed the signature check")

        # the longest key the engine makes (a 128-byte customer id, a 64-byte
        # rule name, a 128-byte event id) goes out whole, as it was signed
        long_key = "c" * 128 + ":" + "r" * 64 + ":" + "e" * 128
        before = len(received)
        outs, _ = drive(driver, plugin_dir, state, creds, base + "/ok", [touch(3, long_key)])
        check(outs[3]["outcome"] == "delivered", "a 322-byte key: %r" % outs[3])
        check(verify_signature(received[before][1], received[before][2]) == long_key,
              "the webhook-id header must carry the whole key")
        # a key that cannot be one header line is refused, never sent cut
        outs, _ = drive(driver, plugin_dir, state, creds, base + "/ok", [touch(4, "k" * 2000)])
        check(outs[4]["outcome"] == "permanent" and "longer than" in outs[4]["reason"],
              "a 2000-byte key: %r" % outs[4])
        check(len(received) == before + 1, "a refused key was sent")

        cases = [
            ("/gone", "permanent", "channel_disabled", None, "410"),
            ("/busy", "retry", "none", 120, "500"),
            ("/slow-down", "retry", "none", (540, 601), "429"),
            ("/bad", "retry", "none", 0, "400"),
            ("/forever", "retry", "none", 366 * 86400, "Retry-After 31622400s"),
            ("/redirect", "retry", "none", 0, "redirects are not followed"),
        ]
        for i, (path, kind, effect, retry_after, word) in enumerate(cases):
            outs, _ = drive(driver, plugin_dir, state, creds, base + path, [touch(10 + i, "k%d" % i)])
            o = outs[10 + i]
            check(o["outcome"] == kind, "%s: expected %s, got %r" % (path, kind, o))
            check(o["effect"] == effect, "%s: effect %r" % (path, o))
            check(word in o["reason"], "%s: reason %r lacks %r" % (path, o["reason"], word))
            if isinstance(retry_after, int):
                check(o["retry_after"] == retry_after, "%s: retry_after %r" % (path, o))
            elif retry_after:
                check(retry_after[0] <= o["retry_after"] <= retry_after[1],
                      "%s: retry_after %r" % (path, o))
        check(not any(p == "/elsewhere" for p, _, _ in received), "a redirect was followed")

        # a hanging receiver: the plugin's timeout fires and the touch is retried
        t0 = time.time()
        outs, _ = drive(driver, plugin_dir, state, creds, base + "/hang", [touch(30, "k30")],
                        extra=("--set", "timeout=1s"))
        elapsed = time.time() - t0
        check(outs[30]["outcome"] == "retry", "hang: %r" % outs[30])
        check("timed out" in outs[30]["reason"], "hang reason: %r" % outs[30])
        check(elapsed < 3.5, "the timeout took %.1fs" % elapsed)

        # a wrong secret is refused at load, naming the file but not its content
        with open(os.path.join(creds, "bad.key"), "w") as f:
            f.write("whsec_tooshort\n")
        p = subprocess.run([driver, "--plugin-dir", plugin_dir, "--state-dir", state,
                            "--credentials-dir", creds, "--plugin", "webhook",
                            "--set", "url=" + base + "/ok", "--set", "secret_file=bad.key"],
                           input="", capture_output=True, text=True, timeout=30)
        check(p.returncode == 3, "a bad secret must fail the load: %d %s" % (p.returncode, p.stdout))
        check("tooshort" not in p.stdout + p.stderr, "the bad secret was echoed")

        https_cases(driver, plugin_dir, state, creds, tmp)

    server.shutdown()
    print("ok: webhook plugin outcomes and signatures")


if __name__ == "__main__":
    main()
