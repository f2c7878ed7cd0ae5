#!/usr/bin/env python3
"""Keep-alive HTTP load against one URL, one header set per client thread,
until a stop file appears or a time limit passes (both bounded). Prints one
JSON object: per header set, the requests answered 2xx, other statuses,
connection errors, which backend ("pod" of the echo app) answered, and the
first failures with their wall-clock time.

    load.py URL STOPFILE SECONDS [HEADER ...]   (HEADER "Name: value", or "-" for none)

Each header set gets CLIENTS threads (default 3), each with one persistent
connection that reconnects after a response with "Connection: close", as
any HTTP/1.1 client does; a request that fails on a connection the server
closed is an error, not retried: that is what a failed request is."""
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

url, stop_file, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
header_sets = sys.argv[4:] or ["-"]
clients = int(os.environ.get("CLIENTS", "3"))
u = urllib.parse.urlsplit(url)
deadline = time.monotonic() + seconds
results = {h: {"ok": 0, "status": {}, "errors": 0, "error_kinds": {}, "pods": {}, "failures": []}
           for h in header_sets}
lock = threading.Lock()


def note(r, what):
    """Keep the first failures with their wall-clock time, to place them
    against the joins and leaves (the caller holds the lock)."""
    if len(r["failures"]) < 20:
        r["failures"].append([round(time.time(), 3), what])


def run(header):
    headers = {}
    if header != "-":
        name, value = header.split(":", 1)
        headers[name.strip()] = value.strip()
    conn = None
    r = results[header]
    while time.monotonic() < deadline and not os.path.exists(stop_file):
        try:
            if conn is None:
                conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
            conn.request("GET", u.path or "/", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            with lock:
                if 200 <= resp.status < 300:
                    r["ok"] += 1
                    try:
                        pod = json.loads(body).get("pod", "?")
                    except ValueError:
                        pod = "?"
                    r["pods"][pod] = r["pods"].get(pod, 0) + 1
                else:
                    r["status"][str(resp.status)] = r["status"].get(str(resp.status), 0) + 1
                    note(r, str(resp.status))
            if resp.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            with lock:
                r["errors"] += 1
                kind = type(e).__name__
                r["error_kinds"][kind] = r["error_kinds"].get(kind, 0) + 1
                note(r, kind)
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.01)
    if conn is not None:
        conn.close()


threads = [threading.Thread(target=run, args=(h,)) for h in header_sets for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(results, sort_keys=True))
