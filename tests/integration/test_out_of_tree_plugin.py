#!/usr/bin/env python3
"""A third-party plugin built against the *installed* ABI, then loaded.

1. `cmake --install --prefix` the build into a temporary directory, a prefix
   other than the configured one.
2. Check the install holds the public header, cadence-plugin.pc and the
   shipped plugins, and that the installed .pc, used as is (no
   --define-variable), names that prefix's directories.
3. Build tests/example_plugin (the "chat" plugin) with CMake + pkg-config
   against that install only (the compile command must name the installed
   include directory and nothing of the source tree).
4. Load chat.so through the plugin host (the test host driver, which runs the
   daemon's plugin_host.c) and deliver a touch to a loopback receiver; a typo
   in its options is refused with the config line.
"""
import glob
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading

received = []


class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        received.append((self.path, self.headers.get("Content-Type"), body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def run(args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    if p.returncode != 0:
        fail("%s exited %d:\n%s\n%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
    return p


def cache_value(build, name):
    with open(os.path.join(build, "CMakeCache.txt")) as f:
        for line in f:
            m = re.match(r"^%s:[A-Z]+=(.*)$" % re.escape(name), line.strip())
            if m:
                return m.group(1)
    fail("%s is not in the CMake cache" % name)


def main():
    build = os.environ["CADENCE_BUILD_DIR"]
    source = os.environ["CADENCE_SOURCE_DIR"]
    driver = os.path.join(build, "tests", "plugin_driver")

    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "inst")
        if cache_value(build, "CMAKE_INSTALL_PREFIX") == prefix:
            fail("the test prefix must differ from the configured one")
        env = dict(os.environ)
        env.pop("DESTDIR", None)
        run(["cmake", "--install", build, "--prefix", prefix], env=env)

        header = os.path.join(prefix, "include", "cadence", "channel.h")
        if not os.path.isfile(header):
            fail("the install lacks %s" % header)
        pcs = glob.glob(os.path.join(prefix, "**", "pkgconfig", "cadence-plugin.pc"),
                        recursive=True)
        if len(pcs) != 1:
            fail("expected one installed cadence-plugin.pc, found %r" % pcs)
        shipped = glob.glob(os.path.join(prefix, "**", "cadence", "plugins", "*.so"),
                            recursive=True)
        names = {os.path.basename(p) for p in shipped}
        for need in ("file.so", "webhook.so"):
            if need not in names:
                fail("the install lacks plugin %s (found %r)" % (need, sorted(names)))

        # The installed .pc as is: its directories follow the install prefix.
        pc_env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]))
        pc_env.pop("DESTDIR", None)
        pc_env.pop("PKG_CONFIG_SYSROOT_DIR", None)
        for var, want in (("includedir", os.path.join(prefix, "include")),
                          ("plugindir", os.path.dirname(shipped[0]))):
            got = run(["pkg-config", "--variable=" + var, "cadence-plugin"],
                      env=pc_env).stdout.strip()
            if os.path.realpath(got) != os.path.realpath(want):
                fail("pkg-config gives %s=%s, not the installed %s" % (var, got, want))

        # Build the example against the install, as a third party would.
        ex = os.path.join(tmp, "example-build")
        run(["cmake", "-S", os.path.join(source, "tests", "example_plugin"), "-B", ex,
             "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"], env=pc_env)
        run(["cmake", "--build", ex], env=pc_env)
        plugin = os.path.join(ex, "chat.so")
        if not os.path.isfile(plugin):
            fail("the example build did not produce chat.so")
        with open(os.path.join(ex, "compile_commands.json")) as f:
            command = json.load(f)[0]["command"]
        inc = os.path.realpath(os.path.join(prefix, "include"))
        dirs = [os.path.realpath(d) for d in
                re.findall(r"(?:-I|-isystem )(\S+)", command)]
        if inc not in dirs:
            fail("the example was not compiled against the installed header: %s" % command)
        if os.path.join(source, "include") in command or os.path.join(source, "daemon") in command:
            fail("the example saw the source tree: %s" % command)
        nm = run(["nm", "-D", "--defined-only", plugin]).stdout
        exported = [line.split()[-1] for line in nm.splitlines() if " T " in line or " D " in line
                    or " R " in line]
        if "cadence_channel_plugin" not in exported:
            fail("chat.so does not export cadence_channel_plugin: %r" % exported)

        # Load it through the plugin host and deliver one touch.
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = "http://127.0.0.1:%d/hooks/T0" % server.server_address[1]
        state = os.path.join(tmp, "state")
        os.makedirs(state)
        touch = {"touch_id": 5, "idempotency_key": "acme:thanks:1", "customer_id": "acme",
                 "customer_name": "Acme", "contact_id": "c1", "first_name": "Ada",
                 "rule": "thank_you", "purpose": "appreciation",
                 "template": {"text": "Thank {{contact.first_name}} at {{customer.name}} \"today\""}}
        p = run([driver, "--plugin-dir", ex, "--state-dir", state, "--plugin", "chat",
                 "--channel", "account-managers", "--set", "url=" + url,
                 "--set", "prefix=[cadence] "], input=json.dumps(touch) + "\n")
        outs = [json.loads(line) for line in p.stdout.splitlines()]
        if outs != [{"touch_id": 5, "outcome": "delivered", "provider_id": "chat-acme:thanks:1",
                     "reason": "", "retry_after": 0, "effect": "none"}]:
            fail("unexpected outcome %r\n%s" % (outs, p.stderr))
        if "chat[account-managers]: posting to a chat webhook" not in p.stderr:
            fail("the plugin's log line lacks its prefix:\n%s" % p.stderr)
        if len(received) != 1:
            fail("the receiver got %d requests" % len(received))
        path, ctype, body = received[0]
        doc = json.loads(body)
        if path != "/hooks/T0" or ctype != "application/json" or doc != {
                "text": "[cadence] Thank Ada at Acme \"today\"", "idempotency_key": "acme:thanks:1"}:
            fail("unexpected request %r %r %r" % (path, ctype, body))

        # Its option table is enforced by the host.
        p = subprocess.run([driver, "--plugin-dir", ex, "--state-dir", state, "--plugin", "chat",
                            "--set", "urll=" + url], input="", capture_output=True, text=True,
                           timeout=60)
        error = json.loads(p.stdout.splitlines()[-1]).get("error", "") if p.stdout else ""
        if p.returncode != 3 or \
                'driver.conf:10: channel "chat": plugin chat has no option "urll"' not in error:
            fail("a typo in the chat plugin's options was not refused: %d %s %s"
                 % (p.returncode, p.stdout, p.stderr))
        server.shutdown()
    print("ok: out-of-tree plugin built against the install and loaded")


if __name__ == "__main__":
    main()
