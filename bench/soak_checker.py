#!/usr/bin/env python3
"""soak_checker — checks a soak run independently of the engine.

Reads what bench/soak left in its work directory: the imported data
(customers.jsonl, contacts.jsonl, events.jsonl), the policy numbers of the
config (policy.json, written from the same table as cadenced.conf), the
sink's delivered log (sink.jsonl) and, after the daemon stopped, the store
(state/cadence.db, read with sqlite3 only to compare the touches it recorded
with what the sink received). No engine code and no control request is used:
every rule of SPEC section 2 that the delivered log can show is re-derived
here from the data, with Python's zoneinfo for local time.

Checked, over the touches delivered (one per idempotency key):
  once       every touch the store marks delivered reached the sink, the
             sink saw no key the store does not know, and each key was
             delivered once (repeated attempts of one key are counted apart)
  R1 stage   the customer's stage is one the rule lists
  R2 fresh   an event rule's touch lies in [event+after, event+expires] of
             an event of its type, each event used once (R13), and it was
             sent before that expiry
  R4         at most N appreciation touches per rolling 365 days; no ask on
             the local day of an appreciation
  R5         min_gap between any two touches (transactional rules that
             bypass caps excepted); per-channel and "all" caps in sliding
             windows
  R8         the contact holds one of the rule's roles
  R10        email/sms consent opted in; quiet hours and weekdays in the
             customer's zone at the decision instant (bypass_quiet_hours
             excepted); SMS inside its window
  R13        recurring rules at most once per period
  R14        nothing to a paused customer; no ask while a complaint is open
Exit status 0 when nothing is violated, 1 otherwise; the first violations of
each kind are printed.
"""
import argparse
import bisect
import collections
import datetime as dt
import json
import os
import sqlite3
import sys
from zoneinfo import ZoneInfo

DAY = 86400
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def parse_time(s):
    return int(dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ")
               .replace(tzinfo=dt.timezone.utc).timestamp())


def minutes(hhmm):
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def in_range(mins, start, end):
    """True when the minute of day lies in [start, end), wrapping midnight."""
    return start <= mins < end if start <= end else (mins >= start or mins < end)


def load_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Checker:
    def __init__(self, work):
        self.work = work
        with open(os.path.join(work, "policy.json")) as f:
            self.pol = json.load(f)
        self.customers = {c["id"]: c for c in load_jsonl(os.path.join(work, "customers.jsonl"))}
        self.contacts = {c["id"]: c for c in load_jsonl(os.path.join(work, "contacts.jsonl"))}
        self.events = collections.defaultdict(lambda: collections.defaultdict(list))
        self.event_by_id = {}
        for e in load_jsonl(os.path.join(work, "events.jsonl")) + load_jsonl(
                os.path.join(work, "events-live.jsonl")):
            self.events[e["customer"]][e["type"]].append(parse_time(e["at"]))
            self.event_by_id[e["id"]] = (e["customer"], e["type"], parse_time(e["at"]))
        for per in self.events.values():
            for lst in per.values():
                lst.sort()
        self.zones = {}
        self.violations = collections.defaultdict(list)
        self.checked = collections.Counter()
        self.lagged_into_quiet = 0
        self.timed_out_delivered = 0

    def zone(self, name):
        z = self.zones.get(name)
        if z is None:
            z = self.zones[name] = ZoneInfo(name)
        return z

    def local(self, cust, t):
        return dt.datetime.fromtimestamp(t, self.zone(cust.get("timezone") or "UTC"))

    def bad(self, kind, text):
        self.violations[kind].append(text)

    # ---- delivered once ------------------------------------------------------

    def read_sink(self):
        attempts = collections.Counter()
        first = {}
        for r in load_jsonl(os.path.join(self.work, "sink.jsonl")):
            if not 200 <= r["status"] < 300:
                continue
            attempts[r["id"]] += 1
            if r["id"] not in first:
                first[r["id"]] = r
        self.repeats = sum(n - 1 for n in attempts.values() if n > 1)
        self.repeated_keys = sum(1 for n in attempts.values() if n > 1)
        self.delivered = list(first.values())
        return first

    def check_store(self, sink, end):
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.work, "state", "cadence.db"),
                             uri=True)
        states = collections.Counter()
        self.expired = collections.Counter()
        store_keys = set()
        for key, state, due, error in db.execute(
                "SELECT idempotency_key, state, due_at, last_error FROM touches"):
            store_keys.add(key)
            states[state] += 1
            if state == "dropped":  # a final suppression, kept as history: never sent
                if key in sink:
                    self.bad("once", "touch %s was suppressed but the sink received it" % key)
                continue
            if state == "delivered":
                self.checked["once"] += 1
                if key not in sink:
                    self.bad("once", "touch %s is delivered in the store but the sink never "
                             "received it" % key)
            elif state == "dead" and error.startswith("expired"):
                # Not sent late (R2): counted. The sink may still hold it when
                # an attempt timed out after the sink logged it; its time is
                # checked against the window like every delivered touch.
                self.expired[key.split("/")[1] if "/" in key else ""] += 1
                if key in sink:
                    self.timed_out_delivered += 1
            elif due < end - DAY:
                # Neither delivered nor given up a whole simulated day after it was due.
                self.bad("once", "touch %s is still %s (%s), due %s, a day before the end"
                         % (key, state, error, dt.datetime.utcfromtimestamp(due)))
        for key in sink:
            if key not in store_keys:
                self.bad("once", "the sink received key %s the store does not know" % key)
        db.close()
        self.store_states = states

    # ---- the rules -------------------------------------------------------------

    def check(self):
        by_customer = collections.defaultdict(list)
        for r in self.delivered:
            r["t"] = parse_time(r["decided_at"])
            by_customer[r["customer"]].append(r)
        rules = self.pol["rules"]
        sms_lo, sms_hi = (minutes(x) for x in self.pol["sms_window"])
        address = self.pol["channel_address"]
        for cid, touches in by_customer.items():
            cust = self.customers.get(cid)
            if cust is None:
                self.bad("data", "touch to unknown customer %s" % cid)
                continue
            touches.sort(key=lambda r: (r["t"], r["id"]))
            p = self.pol["policies"].get(cust.get("segment") or "default",
                                         self.pol["policies"]["default"])
            q_lo, q_hi = minutes(p["quiet"][0]), minutes(p["quiet"][1])
            used_events = set()
            complaints = self.events[cid].get("complaint_opened", [])
            resolved = self.events[cid].get("complaint_resolved", [])
            for r in touches:
                rule = rules.get(r["rule"])
                what = "%s %s %s at %s" % (cid, r["rule"], r["channel"], r["decided_at"])
                if rule is None:
                    self.bad("data", "unknown rule: " + what)
                    continue
                self.checked["touches"] += 1
                if cust.get("paused"):
                    self.bad("R14 paused", what)
                if cust.get("stage", "prospect") not in rule["stages"]:
                    self.bad("R1 stage", "%s: stage %s" % (what, cust.get("stage")))
                contact = self.contacts.get(r["contact"])
                if r["channel"] not in rule["channels"]:
                    self.bad("R5 channel", what)
                if address.get(r["channel"]) != "none":
                    if contact is None or contact["customer"] != cid:
                        self.bad("R8 role", "%s: contact %s is not the customer's"
                                 % (what, r["contact"]))
                        contact = None
                    elif not set(contact.get("roles", [])) & set(rule["roles"]):
                        self.bad("R8 role", "%s: contact %s has roles %s" % (
                            what, r["contact"], contact.get("roles")))
                    kind = "email" if address[r["channel"]] == "email" else "sms"
                    if contact is not None and not (contact.get("consent") or {}).get(
                            kind, {}).get("opted_in"):
                        self.bad("R10 consent", "%s: no %s consent of %s" % (
                            what, kind, r["contact"]))
                lt = self.local(cust, r["t"])
                mins = lt.hour * 60 + lt.minute
                if not rule.get("bypass_quiet_hours"):
                    sent = self.local(cust, r["ts"])
                    if in_range(sent.hour * 60 + sent.minute, q_lo, q_hi):
                        self.lagged_into_quiet += 1
                    self.checked["hours"] += 1
                    if in_range(mins, q_lo, q_hi):
                        self.bad("R10 quiet hours", "%s: local %s" % (what, lt.strftime("%a %H:%M")))
                    if WEEKDAYS[lt.weekday()] not in p["weekdays"]:
                        self.bad("R10 weekday", "%s: local %s" % (what, lt.strftime("%a %H:%M")))
                if address.get(r["channel"]) == "phone" and not in_range(mins, sms_lo, sms_hi):
                    self.bad("R10 sms window", "%s: local %s" % (what, lt.strftime("%H:%M")))
                trig = rule["trigger"]
                if "event" in trig:
                    self.checked["event touches"] += 1
                    # The key names its trigger ("customer/rule/e:event"): that
                    # event must exist, be of the rule's type and this customer's,
                    # hold the decision in its window, and serve the rule once.
                    match = None
                    parts = r["id"].split("/")
                    ev = (self.event_by_id.get(parts[2][2:])
                          if len(parts) == 3 and parts[2].startswith("e:") else None)
                    if ev and ev[0] == cid and ev[1] == trig["event"] \
                            and (r["rule"], parts[2]) not in used_events \
                            and ev[2] + trig["after"] <= r["t"] <= ev[2] + trig["expires"]:
                        match = (parts[2], ev[2])
                    if match is None:
                        self.bad("R2/R13 trigger", "%s (%s): its key names no unused %s event of "
                                 "this customer with the decision in its window"
                                 % (what, r["id"], trig["event"]))
                    else:
                        used_events.add((r["rule"], match[0]))
                        if r["ts"] > match[1] + trig["expires"]:
                            self.bad("R2 expiry", "%s: sent %s after the window closed" % (
                                what, dt.datetime.utcfromtimestamp(r["ts"])))
                if rule["purpose"] == "ask":
                    i = bisect.bisect_right(complaints, r["t"]) - 1
                    if i >= 0:
                        opened = complaints[i]
                        if not any(opened <= x <= r["t"] for x in resolved):
                            self.bad("R14 complaint", "%s: complaint opened %s not resolved" % (
                                what, dt.datetime.utcfromtimestamp(opened)))
            self.check_spacing(cid, cust, p, touches, rules)

    def check_spacing(self, cid, cust, p, touches, rules):
        gated = [r for r in touches if not rules[r["rule"]].get("bypass_caps")]
        for a, b in zip(gated, gated[1:]):
            self.checked["gaps"] += 1
            if b["t"] - a["t"] < p["min_gap"]:
                self.bad("R5 min_gap", "%s: %s at %s then %s at %s (min_gap %ds)" % (
                    cid, a["rule"], a["decided_at"], b["rule"], b["decided_at"], p["min_gap"]))
        for chan, (count, window) in p["caps"].items():
            ts = [r["t"] for r in gated if chan == "all" or r["channel"] == chan]
            for i in range(count, len(ts)):
                self.checked["caps"] += 1
                if ts[i] - ts[i - count] < window:
                    self.bad("R5 cap", "%s: %d touches on %s within %ds (cap %d/%ds), last at %s"
                             % (cid, count + 1, chan, ts[i] - ts[i - count], count, window,
                                dt.datetime.utcfromtimestamp(ts[i])))
        appr = [r["t"] for r in touches if r["purpose"] == "appreciation"]
        n = p["appreciation_per_year"]
        for i in range(n, len(appr)):
            if appr[i] - appr[i - n] < 365 * DAY:
                self.bad("R4 appreciation", "%s: %d appreciations within a year" % (cid, n + 1))
        appr_days = {self.local(cust, t).date() for t in appr}
        for r in touches:
            if r["purpose"] == "ask" and self.local(cust, r["t"]).date() in appr_days:
                self.bad("R4 same day", "%s: ask %s on the day of an appreciation" % (
                    cid, r["rule"]))
        by_rule = collections.defaultdict(list)
        for r in touches:
            every = rules[r["rule"]]["trigger"].get("every")
            if every:
                by_rule[(r["rule"], every)].append(r["t"])
        for (name, every), ts in by_rule.items():
            for a, b in zip(ts, ts[1:]):
                if b - a < every:
                    self.bad("R13 period", "%s: %s twice within %ds" % (cid, name, every))


def main():
    ap = argparse.ArgumentParser(description="Checks a soak run's delivered log (bench/soak).")
    ap.add_argument("--work", required=True, help="the soak's work directory")
    ap.add_argument("--days", type=int, required=True, help="simulated days of the run")
    a = ap.parse_args()
    c = Checker(a.work)
    sink = c.read_sink()
    end = c.pol["start"] + a.days * DAY
    c.check_store(sink, end)
    c.check()
    print("checker: %d touches delivered (distinct idempotency keys), %d repeated attempts of "
          "%d keys" % (len(c.delivered), c.repeats, c.repeated_keys))
    print("checker: store touches by state: %s" % ", ".join(
        "%s %d" % kv for kv in sorted(c.store_states.items())))
    per_rule = collections.Counter(r["rule"] for r in c.delivered)
    print("checker: delivered by rule: %s" % ", ".join(
        "%s %d" % kv for kv in sorted(per_rule.items())))
    print("checker: checked %s" % ", ".join("%s %d" % kv for kv in sorted(c.checked.items())))
    lags = sorted(r["ts"] - r["t"] for r in c.delivered)
    if lags:
        print("checker: send lag after decision (simulated seconds): p50 %d, p99 %d, max %d" % (
            lags[len(lags) // 2], lags[int(len(lags) * 0.99)], lags[-1]))
    if c.expired:
        print("checker: given up as expired before they could be sent (never sent late): %s" %
              ", ".join("%s %d" % kv for kv in sorted(c.expired.items())))
    if c.timed_out_delivered:
        print("checker: received by the sink but recorded dead after the attempt timed out: %d"
              % c.timed_out_delivered)
    print("checker: due outside quiet hours but received inside them because of the send lag: "
          "%d" % c.lagged_into_quiet)
    if not c.violations:
        print("checker: no violation")
        return 0
    for kind, items in sorted(c.violations.items()):
        print("checker: VIOLATION %s: %d" % (kind, len(items)))
        for text in items[:5]:
            print("    " + text)
    return 1


if __name__ == "__main__":
    sys.exit(main())
