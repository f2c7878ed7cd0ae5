"""Audit log: DIR/audit.jsonl, one JSON object per request (watches logged at start), with the
fields of a real audit event that tests read (user, userAgent, verb as method, path, status)."""
import datetime
import json
import threading


class Audit:
    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._f = open(path, "a", buffering=1, encoding="utf-8")

    def log(self, user, method, path, query, content_type, status, duration_ms, watch=False, user_agent=None):
        rec = {
            "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "user": user,
            "userAgent": user_agent,
            "method": method,
            "path": path,
            "query": query,
            "contentType": content_type,
            "status": status,
            "durationMs": round(duration_ms, 3),
        }
        if watch:
            rec["watch"] = True
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with self._lock:
            self._f.write(line)

    def close(self):
        with self._lock:
            self._f.close()
