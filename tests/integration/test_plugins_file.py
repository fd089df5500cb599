#!/usr/bin/env python3
"""The file channel's .eml files, read back by Python's email package.

The plugin is loaded by the daemon's plugin host through
tests/plugins_bad/plugin_driver (as test_plugins_email.py does), writes each
touch into a temporary state directory, and the .eml is parsed with
email.policy.default, as a mail reader would. Checks: a non-ASCII subject
longer than one encoded-word, a long ASCII subject and an ASCII subject
that looks like an encoded-word all come back exactly as rendered; every
header line is 7-bit, at most 76 columns (a URL longer than that alone on
its line, under 998); List-Unsubscribe comes from the channel's own
unsubscribe settings with the values percent-encoded; the Message-ID is the
email channel's, derived from the idempotency key.
"""
import email
import email.policy
import json
import os
import re
import subprocess
import tempfile
import unittest

BUILD_DIR = os.environ.get("CADENCE_BUILD_DIR", "build")
PLUGIN_DIR = os.environ.get("CADENCE_PLUGIN_BUILD_DIR", os.path.join(BUILD_DIR, "plugins"))
DRIVER = os.path.join(BUILD_DIR, "tests", "plugin_driver")

NON_ASCII_SUBJECT = ("Merci, Zoë — voici ce que nous avons fait de votre avis sur nos "
                     "livraisons, nos délais et notre emballage 🎉 " * 2).strip()
LONG_ASCII_SUBJECT = " ".join(["Thank you for your detailed feedback on our deliveries"] * 22)
LOOKALIKE_SUBJECT = "=?UTF-8?B?SGFja2Vk?="


class FileChannelEml(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def touch(self, **overrides):
        t = {
            "idempotency_key": "c-77/feedback-followup/e:901",
            "touch_id": 17,
            "customer_id": "c-77",
            "customer_name": "Müller GmbH",
            "contact_id": "p-5",
            "contact_name": "Zoë Müller",
            "first_name": "Zoë",
            "email": "zoe@example.org",
            "rule": "feedback-followup",
            "purpose": "followup",
            "subject": "Hello",
            "text": "Hallo Zoë,\nwir liefern jetzt zweimal pro Woche.\n",
            "html": "<p>Hallo Zoë,</p>",
            "decided_at": 1795424590,
            "attempt": 1,
        }
        t.update(overrides)
        return t

    def send(self, touch, settings=None):
        base = {"directory": "previews", "from": "Corner Shop <hello@shop.example>"}
        base.update(settings or {})
        args = [DRIVER, "--plugin-dir", PLUGIN_DIR, "--state-dir", self.tmp.name,
                "--plugin", "file", "--address", "email"]
        for key, value in base.items():
            args += ["--set", "%s=%s" % (key, value)]
        proc = subprocess.run(args, input=json.dumps(touch) + "\n", capture_output=True,
                              text=True, timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stderr + proc.stdout)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        self.assertEqual(out["outcome"], "delivered", out)
        with open(os.path.join(self.tmp.name, "previews", out["provider_id"]), "rb") as f:
            raw = f.read()
        head = raw.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            line.decode("ascii")  # 7-bit headers
            self.assertLessEqual(len(line), 998, line)
            if not line.startswith(b" <https://"):
                self.assertLessEqual(len(line), 76, line)
        return raw, email.message_from_bytes(raw, policy=email.policy.default)

    def test_subjects_come_back_exactly_as_rendered(self):
        for subject in (NON_ASCII_SUBJECT, LONG_ASCII_SUBJECT, LOOKALIKE_SUBJECT):
            raw, msg = self.send(self.touch(subject=subject))
            self.assertEqual(str(msg["Subject"]), subject)
            for word in re.findall(rb"=\?[^?]+\?[BbQq]\?[^?]*\?=", raw.split(b"\r\n\r\n")[0]):
                self.assertLessEqual(len(word), 75, word)  # RFC 2047 section 2
        self.assertNotIn(b"Subject: =?UTF-8?B?SGFja2Vk?=\r\n", raw)

    def test_headers_and_parts_read_back(self):
        raw, msg = self.send(self.touch())
        self.assertEqual(msg["To"].addresses[0].display_name, "Zoë Müller")
        self.assertEqual(msg["To"].addresses[0].addr_spec, "zoe@example.org")
        self.assertEqual(msg["From"].addresses[0].display_name, "Corner Shop")
        self.assertEqual(msg["From"].addresses[0].addr_spec, "hello@shop.example")
        self.assertRegex(str(msg["Message-ID"]), r"^<[0-9a-f]{32}@shop\.example>$")
        self.assertEqual(str(msg["X-Cadence-Rule"]), "feedback-followup")
        self.assertEqual(str(msg["X-Cadence-Purpose"]), "followup")
        self.assertEqual(msg.get_content_type(), "multipart/alternative")
        self.assertEqual(msg.get_body(("plain",)).get_content().replace("\r\n", "\n"),
                         "Hallo Zoë,\nwir liefern jetzt zweimal pro Woche.\n")
        self.assertIsNone(msg["List-Unsubscribe"])

    def test_unsubscribe_settings_give_a_folded_list_unsubscribe(self):
        long_path = "/".join(["preferences"] * 8)
        raw, msg = self.send(self.touch(customer_id="café büro", contact_id="sp ace"), {
            "unsubscribe_url": "https://shop.example/%s/{{customer.id}}" % long_path,
            "unsubscribe_mailto": "unsub+{{contact.id}}@shop.example",
        })
        url = "https://shop.example/%s/caf%%C3%%A9%%20b%%C3%%BCro" % long_path
        self.assertGreater(len(url), 76)
        self.assertEqual(str(msg["List-Unsubscribe"]),
                         "<mailto:unsub+sp%%20ace@shop.example>, <%s>" % url)
        self.assertIn(b"List-Unsubscribe: <mailto:unsub+sp%20ace@shop.example>,\r\n <https://",
                      raw)
        self.assertEqual(str(msg["List-Unsubscribe-Post"]), "List-Unsubscribe=One-Click")

    def test_a_json_channel_ignores_from(self):
        """Only an .eml has a From: a JSON channel (no address) loads with a
        from that is no mailbox, as it did before .eml files were built by
        the email channel's builder."""
        args = [DRIVER, "--plugin-dir", PLUGIN_DIR, "--state-dir", self.tmp.name,
                "--plugin", "file", "--address", "none", "--set", "directory=json",
                "--set", "from=Preview Bot"]
        proc = subprocess.run(args, input=json.dumps(self.touch()) + "\n", capture_output=True,
                              text=True, timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stderr + proc.stdout)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        self.assertEqual(out["outcome"], "delivered", out)
        self.assertTrue(out["provider_id"].endswith(".json"), out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
