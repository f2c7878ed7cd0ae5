"""Fault injection rules, set at run time by POST /sandbox/faults or DIR/faults.json.

A rule: {"method": "GET", "path": "regex", "query": "substring", "user": "admin",
         "userAgent": "substring" (of the request's User-Agent),
         "nth": 2 | "probability": 0.5, "times": N,
         "action": "fail", "status": 500, "reason": "...", "message": "...",
         "retryAfter": 1}                  (a Retry-After header and details.retryAfterSeconds,
                                            as the API server's 429 from max-in-flight or APF)
      | {..., "action": "stall", "seconds": 1.5}
      | {..., "action": "drop"}            (close the connection without an answer: FIN)
      | {..., "action": "reset"}           (reset the connection without an answer: RST,
                                            as a load balancer or a dying server does)
      | {..., "action": "cut", "events": 1}  (a watch: served, then the connection is
                                            closed mid-stream after that many events)
      | {..., "action": "expire"}          (a watch: a 200 stream with one ERROR event,
                                            410 Expired, as the watch cache answers a
                                            resourceVersion it no longer has)
"""
import json
import os
import random
import re
import threading
import time

from . import errors as E

_DEFAULT_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                    405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 422: "Invalid",
                    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
                    504: "Timeout"}


class RuleError(ValueError):
    pass


class Rule:
    def __init__(self, spec):
        if not isinstance(spec, dict):
            raise RuleError("a rule must be a JSON object")
        unknown = set(spec) - {"method", "path", "query", "user", "userAgent", "nth", "probability", "times", "action",
                               "status", "reason", "message", "seconds", "name",
                               "retryAfter", "events"}
        if unknown:
            raise RuleError("unknown rule field(s): %s" % ", ".join(sorted(unknown)))
        self.spec = dict(spec)
        self.method = (spec.get("method") or "").upper() or None
        try:
            self.path = re.compile(spec.get("path") or ".*")
        except re.error as e:
            raise RuleError("bad path regex: %s" % e)
        self.query = spec.get("query")
        self.user = spec.get("user")
        self.user_agent = spec.get("userAgent")
        self.nth = spec.get("nth")
        self.probability = spec.get("probability")
        if self.nth is not None and (not isinstance(self.nth, int) or self.nth < 1):
            raise RuleError("nth must be a positive integer")
        if self.probability is not None and not (isinstance(self.probability, (int, float)) and 0 <= self.probability <= 1):
            raise RuleError("probability must be a number between 0 and 1")
        self.times = spec.get("times")
        self.action = spec.get("action", "fail")
        if self.action not in ("fail", "stall", "drop", "reset", "cut", "expire"):
            raise RuleError("action must be fail, stall, drop, reset, cut or expire")
        self.status = int(spec.get("status", 500))
        self.retry_after = spec.get("retryAfter")
        if self.retry_after is not None and (not isinstance(self.retry_after, int) or self.retry_after < 0):
            raise RuleError("retryAfter must be a non-negative integer (seconds)")
        self.events = spec.get("events", 1)
        if not isinstance(self.events, int) or self.events < 0:
            raise RuleError("events must be a non-negative integer")
        self.seconds = float(spec.get("seconds", 1))
        self.seen = 0
        self.fired = 0

    def matches(self, method, path, query, user, user_agent=None):
        if self.method and self.method != method:
            return False
        if not self.path.search(path):
            return False
        if self.query and self.query not in query:
            return False
        if self.user and self.user != user:
            return False
        if self.user_agent and self.user_agent not in (user_agent or ""):
            return False
        return True

    def decide(self):
        """Called for a matching request (under the rules lock): does it fire?"""
        self.seen += 1
        if self.times is not None and self.fired >= self.times:
            return False
        if self.nth is not None:
            fire = self.seen == self.nth
        elif self.probability is not None:
            fire = random.random() < self.probability
        else:
            fire = True
        if fire:
            self.fired += 1
        return fire

    def error(self):
        reason = self.spec.get("reason") or _DEFAULT_REASONS.get(self.status, "")
        msg = self.spec.get("message") or "injected fault (%d)" % self.status
        if self.retry_after is None:
            return E.ApiError(self.status, reason, msg)
        return E.ApiError(self.status, reason, msg, {"retryAfterSeconds": self.retry_after},
                          [("Retry-After", str(self.retry_after))])

    def state(self):
        d = dict(self.spec)
        d["seen"] = self.seen
        d["fired"] = self.fired
        return d


class Faults:
    def __init__(self, path):
        self.path = path        # DIR/faults.json
        self._lock = threading.Lock()
        self._api_rules = []
        self._file_rules = []
        self._mtime = None
        self.file_error = None
        self._stop = False
        self._reload()
        threading.Thread(target=self._poll, name="faults-file", daemon=True).start()

    def stop(self):
        self._stop = True

    def _poll(self):
        while not self._stop:
            time.sleep(0.05)
            self._reload()

    def _reload(self):
        try:
            st = os.stat(self.path)
            m = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            m = None
        if m == self._mtime:
            return
        self._mtime = m
        rules = []
        err = None
        if m is not None:
            try:
                with open(self.path, encoding="utf-8") as f:
                    data = json.load(f)
                rules = parse_rules(data)
            except (ValueError, RuleError) as e:
                err = "faults.json: %s" % e
        with self._lock:
            self._file_rules = rules
            self.file_error = err
        return data if m is not None and err is None else None

    def set_rules(self, rules):
        with self._lock:
            self._api_rules = rules

    def add_rules(self, rules):
        with self._lock:
            self._api_rules.extend(rules)

    def remove_rules(self, name):
        """Remove the endpoint rules called name; returns their last state."""
        with self._lock:
            gone = [r for r in self._api_rules if r.spec.get("name") == name]
            self._api_rules = [r for r in self._api_rules if r.spec.get("name") != name]
            return [r.state() for r in gone]

    def state(self):
        with self._lock:
            return {"rules": [r.state() for r in self._api_rules],
                    "fileRules": [r.state() for r in self._file_rules],
                    "fileError": self.file_error}

    def check(self, method, path, query, user, user_agent=None):
        """Return the first rule that fires for this request, or None."""
        if not self._api_rules and not self._file_rules:
            return None
        with self._lock:
            for r in self._api_rules + self._file_rules:
                if r.matches(method, path, query, user, user_agent) and r.decide():
                    return r
        return None


def parse_rules(data):
    if isinstance(data, dict):
        data = data.get("rules", [])
    if not isinstance(data, list):
        raise RuleError('expected {"rules": [...]} or a list of rules')
    return [Rule(x) for x in data]
