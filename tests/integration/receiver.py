#!/usr/bin/env python3
"""A recording webhook receiver for the dispatch tests, on loopback only.

Run as a separate process (so a test can SIGSTOP it mid-request) by the
Receiver class below. Every POST is appended to a JSON-lines log *before*
it is answered, so the log is the set of deliveries the receiver saw:
{"id": webhook-id header, "customer": ..., "attempt": ..., "status": the
answer, "t": arrival time}. The answer is steered at run time through
POST /_admin with a JSON object:

  {"status": 500}             answer every touch with this status
  {"gone": ["cust-1", ...]}   answer 410 Gone for these customers
  {"hang": true}              hold every answer until "hang" is false again
  {"retry_after": 2}          add a Retry-After header to non-2xx answers
  {"delay_ms": 50}            sleep this long before answering

Usage as a script: receiver.py --port-file FILE --log FILE
"""
import argparse
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = 200
        self.gone = set()
        self.hang = False
        self.retry_after = None
        self.delay_ms = 0
        self.log = None


STATE = _State()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _reply(self, status, body=b"", headers=()):
        try:
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout): a late answer goes nowhere.
            self.close_connection = True

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/_admin":
            cmd = json.loads(body or b"{}")
            with STATE.lock:
                if "status" in cmd:
                    STATE.status = int(cmd["status"])
                if "gone" in cmd:
                    STATE.gone = set(cmd["gone"])
                if "hang" in cmd:
                    STATE.hang = bool(cmd["hang"])
                if "retry_after" in cmd:
                    STATE.retry_after = cmd["retry_after"]
                if "delay_ms" in cmd:
                    STATE.delay_ms = int(cmd["delay_ms"])
            self._reply(204)
            return
        try:
            data = json.loads(body).get("data", {})
        except ValueError:
            data = {}
        customer = (data.get("customer") or {}).get("id", "")
        with STATE.lock:
            status = 410 if customer in STATE.gone else STATE.status
            retry_after = STATE.retry_after
            delay = STATE.delay_ms
            record = {"id": self.headers.get("webhook-id", ""), "customer": customer,
                      "attempt": data.get("attempt"), "touch": data.get("touch_id"),
                      "status": status, "t": time.time()}
            STATE.log.write(json.dumps(record) + "\n")
            STATE.log.flush()
        while True:
            with STATE.lock:
                if not STATE.hang:
                    break
            time.sleep(0.02)
        if delay:
            time.sleep(delay / 1000.0)
        headers = []
        if status >= 300 and retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        self._reply(status, b"" if status == 204 else b"ok", headers)


def serve(port_file, log_path):
    STATE.log = open(log_path, "a")
    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer.request_queue_size = 128
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, port_file)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    srv.serve_forever()


def _die_with_parent():
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Receiver:
    """Starts the receiver in its own process; always stop() it."""

    def __init__(self, directory, name="receiver"):
        self.port_file = os.path.join(directory, name + ".port")
        self.log_path = os.path.join(directory, name + ".jsonl")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                      "--port-file", self.port_file, "--log", self.log_path],
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.port_file):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.port = int(f.read())

    def url(self, path="/hook"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def set(self, **kw):
        req = urllib.request.Request(self.url("/_admin"), data=json.dumps(kw).encode(),
                                     method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def records(self):
        if not os.path.exists(self.log_path):
            return []
        out = []
        with open(self.log_path) as f:
            for line in f:
                if line.endswith("\n"):
                    out.append(json.loads(line))
        return out

    def ids(self):
        return [r["id"] for r in self.records()]

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)



# ---- helpers shared by the dispatch tests ---------------------------------------

SANITIZED = bool(os.environ.get("CADENCE_SANITIZED"))

DISPATCH_CONFIG = """\
# written by the dispatch tests
store = {{ state_dir = "{state_dir}"; sync = "full"; commit_interval_ms = 5; }};
control = {{ socket = "{socket}"; }};
log = {{ level = "{log_level}"; }};
plugins = {{ credentials_dir = "{cred_dir}"; }};
engine = {{ shutdown_timeout = "{shutdown}"; batch_size = 500; }};
channels = (
  {{ name = "hook"; plugin = "{hook_plugin}"; address = "{hook_address}";
     concurrency = {concurrency}; timeout = "{timeout}"; max_attempts = {max_attempts};
     retry_schedule = "exponential"; retry_base = "1s"; retry_cap = "{retry_cap}";
     circuit_threshold = {circuit_threshold}; circuit_interval = "{circuit_interval}";
     settings = {{ url = "{url}"; {hook_settings} }}; {hook_extra} }},
  {{ name = "files"; plugin = "file"; address = "none";
     settings = {{ directory = "outbox"; }}; }}
);
policies = (
  {{ segment = "default"; min_gap = "0s"; max_silence = "365d"; }}
);
templates = (
  {{ name = "thanks"; subject = "Thank you, {{{{customer.name}}}}";
     text = "Hi {{{{contact.first_name}}}}, thank you for your order."; }}
);
rules = (
  {{ name = "order_thanks"; purpose = "transactional";
     trigger = {{ event = "purchase"; after = "0s"; expires = "{expires}"; }};
     stages = [ "onboarding", "active", "at_risk" ];
     roles = [ "decision_maker" ];
     channels = [ {channels} ];
     bypass_caps = true; bypass_quiet_hours = true;
     template = "thanks"; }}
);
"""


def write_dispatch_config(tmp, url, name="cadenced.conf", **kw):
    """Writes the dispatch test config (one webhook channel "hook" and a
    file channel "files") into tmp; returns its path. hook_plugin and
    hook_settings (beside url) make "hook" another plugin's channel."""
    cred = tmp.join("cred")
    os.makedirs(cred, exist_ok=True)
    with open(os.path.join(cred, "hook.secret"), "w") as f:
        f.write("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
    values = dict(state_dir=tmp.join("state"), socket=tmp.join("control.sock"), cred_dir=cred,
                  log_level="info", shutdown="5s", concurrency=16, timeout="5s",
                  max_attempts=20, retry_cap="2s", circuit_threshold=5, circuit_interval="1s", url=url,
                  hook_extra="", expires="7d", channels='"hook", "files"', hook_address="none",
                  hook_plugin="webhook", hook_settings='secret_file = "hook.secret";')
    values.update(kw)
    path = tmp.join(name)
    with open(path, "w") as f:
        f.write(DISPATCH_CONFIG.format(**values))
    return path


def write_customers(tmp, n, prefix="cust", first=0, email_consent=False):
    """Writes customers, contacts and purchase events (JSONL) for n customers;
    returns the three file paths. email_consent: each contact opted in to
    email."""
    paths = [tmp.join("%s-%s.jsonl" % (prefix, k)) for k in ("customers", "contacts", "events")]
    with open(paths[0], "w") as cu, open(paths[1], "w") as co, open(paths[2], "w") as ev:
        for i in range(first, first + n):
            cid = "%s-%05d" % (prefix, i)
            cu.write(json.dumps({"id": cid, "name": "Customer %d" % i, "timezone": "UTC",
                                 "stage": "active", "segment": "default"}) + "\n")
            contact = {"id": cid + "-dm", "customer": cid, "name": "Pat %d" % i,
                       "first_name": "Pat", "roles": ["decision_maker"],
                       "email": "pat%d@example.com" % i}
            if email_consent:
                contact["consent"] = {"email": {"opted_in": True, "at": "now-1d",
                                                "source": "signup form"}}
            co.write(json.dumps(contact) + "\n")
            ev.write(json.dumps({"id": cid + "-order", "customer": cid, "type": "purchase",
                                 "at": "now-1m"}) + "\n")
    return paths


def import_customers(cadenced, config, paths):
    """Loads the files written by write_customers with cadenced --import."""
    for kind, path in zip(("customers", "contacts", "events"), paths):
        r = subprocess.run([cadenced, "--config", config, "--import", kind, path],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("import %s failed:\n%s%s" % (kind, r.stdout, r.stderr))


def outbox_rows(db_path):
    """Every touch in the store: (key, idempotency_key, state, attempt, channel,
    last_error), read with a read-only connection (the daemon may be running)."""
    import sqlite3
    con = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=10)
    try:
        return con.execute("SELECT key, idempotency_key, state, attempt, channel, last_error,"
                           " customer_key FROM touches ORDER BY key").fetchall()
    finally:
        con.close()


def query(db_path, sql, args=()):
    import sqlite3
    con = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def wait_until(predicate, timeout, interval=0.1):
    """Polls predicate() until it is true; returns its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="recording webhook receiver (tests)")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    serve(a.port_file, a.log)
