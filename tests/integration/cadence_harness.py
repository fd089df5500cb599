"""Shared helpers for cadenced's integration tests (python3 standard library only).

A test gets a private temporary directory, writes a small valid config (or
derives one), starts the real daemon with a NOTIFY_SOCKET datagram listener
standing in for systemd, waits for READY=1, talks to it through cadencectl or
a raw socket, and stops it. Every daemon started here is killed when the test
ends, whatever happened, and every wait is bounded.

Environment (set by CTest): CADENCED, CADENCECTL, CADENCE_SOURCE_DIR,
CADENCE_BUILD_DIR, CADENCE_PLUGIN_BUILD_DIR.
"""

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

CADENCED = os.environ.get("CADENCED", "")
CADENCECTL = os.environ.get("CADENCECTL", "")
SOURCE_DIR = os.environ.get("CADENCE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
PLUGIN_BUILD_DIR = os.environ.get("CADENCE_PLUGIN_BUILD_DIR", "")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

# A small valid configuration: one file channel, one default policy, no rules.
# {state_dir}, {socket}, {log_level}, {extra_control} are filled by write_config.
SMALL_CONFIG = """\
# written by the integration test harness
store = {{
  state_dir = "{state_dir}";
  sync = "normal";
}};
control = {{
  socket = "{socket}";
  mode = "{mode}";
{extra_control}}};
log = {{
  level = "{log_level}";
}};
engine = {{
  shutdown_timeout = "5s";
}};
channels = (
  {{ name = "file"; plugin = "file"; address = "none"; }}
);
policies = (
  {{ segment = "default"; min_gap = "3d"; max_silence = "60d"; }}
);
rules = ( );
"""


def plugins_built(*names):
    """True when the build's plugin directory holds <name>.so for each name."""
    return bool(PLUGIN_BUILD_DIR) and all(
        os.path.exists(os.path.join(PLUGIN_BUILD_DIR, n + ".so")) for n in names)


def _die_with_parent():
    """preexec_fn: the kernel kills the child if the test process dies first
    (a CTest timeout, a crash), so no daemon outlives its test."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def require_binaries(test):
    """Skips nothing: a missing binary is a failure of the build, said plainly."""
    for name, path in (("CADENCED", CADENCED), ("CADENCECTL", CADENCECTL)):
        if not path or not os.access(path, os.X_OK):
            test.fail("%s is not set to an executable (got %r); run through CTest" % (name, path))


class TempDir:
    """A short temporary directory (Unix socket paths are limited to 107 bytes)."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="cad-", dir="/tmp")

    def join(self, *parts):
        return os.path.join(self.path, *parts)

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


def write_config(tmp, name="cadenced.conf", log_level="info", mode="0660", max_line=None,
                 max_clients=None, access=None, text=None):
    """Writes a config into tmp and returns its path. `text` replaces the
    whole file (for broken configs); otherwise SMALL_CONFIG is filled in."""
    path = tmp.join(name)
    if text is None:
        extra = ""
        if max_line is not None:
            extra += "  max_line = %d;\n" % max_line
        if max_clients is not None:
            extra += "  max_clients = %d;\n" % max_clients
        if access:
            extra += "  access = ( %s );\n" % ", ".join(access)
        text = SMALL_CONFIG.format(state_dir=tmp.join("state"), socket=tmp.join("control.sock"),
                                   log_level=log_level, mode=mode, extra_control=extra)
    with open(path, "w") as f:
        f.write(text)
    return path


def read_text(path):
    with open(path) as f:
        return f.read()


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


class NotifyListener:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET. Like
    systemd it reads every datagram as it comes (a thread of its own): the
    kernel queues only a few unread datagrams, and sd_notify() blocks the
    daemon once the queue is full."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []  # every datagram's assignments, in order
        self.lock = threading.Lock()
        self.closing = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.closing:
            try:
                ready, _, _ = select.select([self.sock], [], [], 0.05)
                if not ready:
                    continue
                data = self.sock.recv(65536).decode("utf-8", "replace")
            except (OSError, ValueError):
                return
            with self.lock:
                self.messages.extend(line for line in data.splitlines() if line)

    def poll(self, timeout):
        """Waits `timeout` seconds; returns the lines that arrived meanwhile."""
        with self.lock:
            mark = len(self.messages)
        time.sleep(timeout)
        with self.lock:
            return self.messages[mark:]

    def wait_for(self, assignment, timeout, start=0):
        """Waits until a message equal to (or, for "STATUS=", starting with)
        `assignment` has arrived at index >= start; returns its index or -1."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(start, len(self.messages)):
                m = self.messages[i]
                if m == assignment or (assignment.endswith("=") and m.startswith(assignment)):
                    return i
            left = deadline - time.monotonic()
            if left <= 0:
                return -1
            time.sleep(min(left, 0.01))

    def close(self):
        self.closing = True
        self.thread.join()
        self.sock.close()


class Daemon:
    """One cadenced process under test."""

    def __init__(self, tmp, config, args=(), env=None, notify=True):
        self.tmp = tmp
        self.config = config
        self.socket = tmp.join("control.sock")
        self.log_path = tmp.join("cadenced-%d.log" % int(time.monotonic() * 1000))
        self.notify = NotifyListener(tmp.join("notify-%d.sock" % int(time.monotonic() * 1e6))) \
            if notify else None
        full_env = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID",
                  "STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY"):
            full_env.pop(k, None)
        if self.notify:
            full_env["NOTIFY_SOCKET"] = self.notify.path
        if env:
            full_env.update(env)
        self.log = open(self.log_path, "wb")
        self.argv = [CADENCED, "--config", config] + list(args)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=full_env,
                                     preexec_fn=_die_with_parent)

    def wait_ready(self, timeout=START_TIMEOUT):
        """Waits for READY=1; fails with the daemon's log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.notify.wait_for("READY=1", 0.2) >= 0:
                return
            if self.proc.poll() is not None:
                raise AssertionError("cadenced exited with %d before READY=1:\n%s"
                                     % (self.proc.returncode, self.read_log()))
        raise AssertionError("no READY=1 within %.0f s:\n%s" % (timeout, self.read_log()))

    def read_log(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """Returns the exit status, or None when it did not exit in time."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; returns the exit status (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        if rc is None:
            self.kill()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def close(self):
        """Always called at the end of a test: nothing survives it."""
        self.kill()
        self.log.close()
        if self.notify:
            self.notify.close()

    def ctl(self, *args, timeout=20, socket_path=None, env=None, preexec_fn=None):
        """Runs cadencectl against this daemon; returns CompletedProcess (text)."""
        return run_ctl(["--socket", socket_path or self.socket] + list(args), timeout=timeout,
                       env=env, preexec_fn=preexec_fn)

    def connect(self, timeout=10):
        return Client(self.socket, timeout)


def run_ctl(args, timeout=20, env=None, preexec_fn=None):
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([CADENCECTL] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=full_env, preexec_fn=preexec_fn)


class Client:
    """A raw control-socket connection speaking newline-delimited JSON."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self):
        """Reads one reply line and parses it; None on EOF."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, obj):
        self.send(obj)
        return self.recv()

    def close(self):
        self.sock.close()


class DaemonTestCase(unittest.TestCase):
    """Gives each test a temp dir and kills every daemon it started."""

    def setUp(self):
        require_binaries(self)
        self.tmp = TempDir()
        self.daemons = []

    def tearDown(self):
        failed = self._failed()
        for d in self.daemons:
            d.kill()
            if failed:
                sys.stderr.write("---- log of %s\n%s\n" % (" ".join(d.argv), d.read_log()))
            d.close()
        self.tmp.cleanup()

    def start_example(self, args=(), env=None, ready=True):
        """Starts a daemon on the shipped etc/cadenced.conf with its state, socket
        (and plugins, when built) redirected into the temp dir; skips the test
        when the example is not in the tree."""
        example = os.path.join(SOURCE_DIR, "etc", "cadenced.conf")
        if not os.path.exists(example):
            self.skipTest("etc/cadenced.conf is not in the tree")
        extra = ["--state-dir", self.tmp.join("state"), "--socket", self.tmp.join("control.sock")]
        if plugins_built("file"):
            extra += ["--plugin-dir", PLUGIN_BUILD_DIR]
        return self.start(config=example, args=extra + list(args), env=env, ready=ready)

    def _failed(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return False
        return any(t is self for t, _ in list(result.errors) + list(result.failures))

    def start(self, config=None, args=(), env=None, ready=True, **config_kw):
        """Starts a daemon (writing the small config unless given) and waits for READY=1."""
        if config is None:
            config = write_config(self.tmp, **config_kw)
        args = list(args)
        if "--plugin-dir" not in args and plugins_built("file", "webhook"):
            # The daemon loads its channels' plugins: use the build's.
            args += ["--plugin-dir", PLUGIN_BUILD_DIR]
        d = Daemon(self.tmp, config, args=args, env=env)
        self.daemons.append(d)
        if ready:
            d.wait_ready()
        return d


def main():
    unittest.main(verbosity=2)
