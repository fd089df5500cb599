"""cadencectl import against a real daemon: JSONL and CSV streamed in
chunks, bad rows reported with their file line numbers and skipped, good
rows kept, duplicates counted, lines longer than a request refused, imported
customers evaluated; and the import throughput figure.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cadence_harness as h  # noqa: E402


class Import(h.DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.d = self.start(max_line=8192)

    def write(self, name, text):
        path = self.tmp.join(name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def status(self):
        r = self.d.ctl("--json", "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def customers(self, n, prefix="c"):
        return "".join(json.dumps({"id": "%s-%d" % (prefix, i), "name": "Customer %d" % i,
                                   "stage": "active"}) + "\n" for i in range(n))

    def test_jsonl_bad_rows_are_reported_with_line_numbers(self):
        rows = self.customers(3).splitlines()
        rows.insert(1, '{"id": "bad-stage", "stage": "gold"}')           # line 2
        rows.insert(3, '{"id": "bad-json", ')                             # line 4
        rows.append('{"name": "no id"}')                                  # line 6
        rows.append('{"id": "typo", "stgae": "active"}')                  # line 7
        rows.append("")                                                   # blank: ignored
        rows.append('{"id": "bad-zone", "timezone": "Mars/Base"}')        # line 9
        path = self.write("customers.jsonl", "\n".join(rows) + "\n")
        r = self.d.ctl("import", "customers", path, "--chunk-bytes", "1024")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        for line, word in ((2, "stage"), (4, ""), (6, "id"), (7, "stgae"), (9, "timezone")):
            self.assertRegex(r.stderr, r"customers\.jsonl:%d: .*%s" % (line, word))
        self.assertIn("3 customers accepted, 5 rejected", r.stdout)
        self.assertEqual(self.status()["counts"]["customers"], 3)
        shown = self.d.ctl("--json", "customer", "show", "c-2")
        self.assertEqual(shown.returncode, 0, shown.stderr)

    def test_csv_in_chunks_keeps_line_numbers_and_quoted_records(self):
        lines = ["id,name,stage,attributes"]
        for i in range(200):
            lines.append('c-%d,"Customer, %d",active,"{""plan"": ""team""}"' % (i, i))
        lines.insert(51, 'multi,Two lines,active,"{')  # a quoted record over lines 52-53
        lines.insert(52, '""plan"": ""solo""}"')
        lines.insert(120, "broken,Name,emperor,{}")  # line 121: bad stage
        path = self.write("customers.csv", "\n".join(lines) + "\n")
        r = self.d.ctl("import", "customers", path, "--chunk-bytes", "1024")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("customers.csv:121:", r.stderr)
        self.assertEqual(r.stderr.count("customers.csv:"), 1, r.stderr)
        self.assertIn("201 customers accepted, 1 rejected", r.stdout)
        c = json.loads(self.d.ctl("--json", "customer", "show", "c-7").stdout)
        self.assertEqual(c["name"], "Customer, 7")
        self.assertEqual(c["attributes"], {"plan": "team"})
        multi = json.loads(self.d.ctl("--json", "customer", "show", "multi").stdout)
        self.assertEqual(multi["attributes"], {"plan": "solo"})

    def test_bad_header_and_usage(self):
        path = self.write("c.csv", "id,colour\nc-1,blue\n")
        r = self.d.ctl("import", "customers", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("colour", r.stderr)
        r = self.d.ctl("import", "planets", self.write("p.jsonl", '{"id": "x"}\n'))
        self.assertEqual(r.returncode, 1)
        self.assertIn("kind", r.stderr)
        self.assertEqual(self.d.ctl("import", "customers").returncode, 2)
        r = self.d.ctl("import", "customers", self.tmp.join("missing.jsonl"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot open", r.stderr)

    def test_long_lines_are_refused_and_the_rest_kept(self):
        rows = self.customers(2).splitlines()
        rows.insert(1, json.dumps({"id": "huge", "name": "x" * 20000}))
        path = self.write("customers.jsonl", "\n".join(rows) + "\n")
        r = self.d.ctl("import", "customers", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("customers.jsonl:2: the line is longer than one request may be", r.stderr)
        self.assertIn("2 customers accepted, 1 rejected", r.stdout)

    def test_events_duplicates_and_evaluation(self):
        self.assertEqual(self.d.ctl("import", "customers",
                                    self.write("c.jsonl", self.customers(20))).returncode, 0)
        events = "".join(json.dumps({"id": "e-%d" % i, "customer": "c-%d" % (i % 20),
                                     "type": "purchase", "at": "now-%dd" % (i % 9)}) + "\n"
                         for i in range(60))
        events += json.dumps({"id": "e-x", "customer": "nobody", "type": "purchase",
                              "at": "now"}) + "\n"
        path = self.write("events.jsonl", events)
        r = self.d.ctl("import", "events", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("events.jsonl:61:", r.stderr)
        self.assertIn("nobody", r.stderr)
        self.assertIn("60 events accepted, 1 rejected, 0 duplicates", r.stdout)
        r = self.d.ctl("--json", "import", "events", path)
        summary = json.loads(r.stdout)
        self.assertEqual((summary["accepted"], summary["duplicates"]), (0, 60))
        self.assertEqual(self.status()["counts"]["events"], 60)
        deadline = time.time() + 15
        while time.time() < deadline and self.status()["scheduler"]["customers"] < 20:
            time.sleep(0.2)
        self.assertEqual(self.status()["scheduler"]["customers"], 20)

    def test_raw_import_requests(self):
        c = self.d.connect()
        try:
            base = {"cmd": "import", "kind": "customers", "format": "jsonl"}
            cases = [
                (dict(base, lines=['{"id": "a"}\n{"id": "b"}']), "newline"),
                (dict(base, lines=[1]), "not a string"),
                (dict(base, lines="x"), "lines"),
                (dict(base, first_line=0, lines=[]), "first_line"),
                (dict(base, format="xml", lines=[]), "format"),
                (dict(base, format="csv", lines=[]), "header"),
                (dict(base, header="id", lines=[]), "header"),
                (dict(base, lines=[], colour="red"), "colour"),
            ]
            for req, word in cases:
                reply = c.call(req)
                self.assertIs(reply["ok"], False, req)
                self.assertEqual(reply["error"]["code"], "bad_request", reply)
                self.assertIn(word, reply["error"]["message"])
            reply = c.call(dict(base, first_line=100, source="x.jsonl",
                                lines=['{"id": "ok-1"}', '{"id": "bad", "stage": 1}']))
            self.assertIs(reply["ok"], True, reply)
            self.assertEqual(reply["result"]["accepted"], 1)
            self.assertEqual(reply["result"]["errors"][0]["line"], 101)
            self.assertTrue(reply["result"]["errors"][0]["message"].startswith("x.jsonl:101: "))
        finally:
            c.close()


class Throughput(h.DaemonTestCase):
    def test_import_throughput(self):
        d = self.start()
        n_customers, n_events = 5000, 50000
        cpath = self.tmp.join("customers.csv")
        with open(cpath, "w") as f:
            f.write("id,name,stage,timezone\n")
            for i in range(n_customers):
                f.write("c-%d,Customer %d,active,Europe/London\n" % (i, i))
        epath = self.tmp.join("events.jsonl")
        with open(epath, "w") as f:
            for i in range(n_events):
                f.write('{"id": "e-%d", "customer": "c-%d", "type": "purchase", '
                        '"at": "2026-01-02T03:04:05Z"}\n' % (i, i % n_customers))
        for kind, path, n in (("customers", cpath, n_customers), ("events", epath, n_events)):
            r = d.ctl("--json", "import", kind, path, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            s = json.loads(r.stdout)
            self.assertEqual(s["accepted"], n)
            sys.stderr.write("import throughput: %d %s in %.2f s = %.0f rows/s (this build)\n"
                             % (n, kind, s["seconds"], s["rows_per_second"]))


if __name__ == "__main__":
    h.main()
