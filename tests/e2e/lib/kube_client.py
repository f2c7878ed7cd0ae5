#!/usr/bin/env python3
"""In-cluster client for the kube tunnel tests (run with `sandbox exec`).
Every request carries the intercept header given as NAME:VALUE (or "-" for none).

  kube_client.py many HOST HEADER N          N concurrent GETs; prints "laptop=A other=B errors=C"
  kube_client.py download HOST HEADER N SEED prints "ok" when the N bytes equal pattern(N, SEED)
  kube_client.py upload HOST HEADER N SEED   POSTs pattern(N, SEED); prints "ok" when the app saw it whole
  kube_client.py sse HOST HEADER K           reads K events, acking each; prints them joined by ","
  kube_client.py watch HOST HEADER FILE      a request every 20 ms until FILE exists; prints
                                             one line per answer: "TIME POD" or "TIME error"
"""
import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import sys
import time


def headers(h):
    if h == "-":
        return {}
    k, _, v = h.partition(":")
    return {k.strip(): v.strip()}


def get(host, hdr, path, body=None, timeout=60):
    c = http.client.HTTPConnection(host, 80, timeout=timeout)
    try:
        c.request("POST" if body is not None else "GET", path, body=body, headers=headers(hdr))
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def pod_of(answer):
    try:
        return json.loads(answer[1])["pod"]
    except (ValueError, KeyError):
        return "?"


def main():
    cmd, host, hdr = sys.argv[1:4]
    if cmd == "many":
        n = int(sys.argv[4])
        counts = {"laptop": 0, "other": 0, "errors": 0}

        def one(i):
            try:
                return pod_of(get(host, hdr, "/many/%d" % i))
            except OSError:
                return None
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            for p in ex.map(one, range(n)):
                counts["errors" if p is None else "laptop" if p == "laptop" else "other"] += 1
        print("laptop=%(laptop)d other=%(other)d errors=%(errors)d" % counts)
    elif cmd == "download":
        n, seed = int(sys.argv[4]), int(sys.argv[5])
        status, body = get(host, hdr, "/bytes/%d/%d" % (n, seed))
        print("ok" if status == 200 and body == random.Random(seed).randbytes(n) else
              "status %d, %d bytes" % (status, len(body)))
    elif cmd == "upload":
        n, seed = int(sys.argv[4]), int(sys.argv[5])
        data = random.Random(seed).randbytes(n)
        status, body = get(host, hdr, "/upload", body=data)
        seen = json.loads(body)
        want = {"length": n, "sha256": hashlib.sha256(data).hexdigest()}
        print("ok" if seen.get("pod") == "laptop" and seen.get("body") == want else "saw %r" % seen)
    elif cmd == "sse":
        k = int(sys.argv[4])
        c = http.client.HTTPConnection(host, 80, timeout=30)
        c.request("GET", "/sse/%d" % k, headers=headers(hdr))
        r = c.getresponse()
        events = []
        while len(events) < k:
            line = r.fp.readline()
            if not line:
                break
            if line.startswith(b"data: "):
                events.append(line[6:].strip().decode())
                get(host, hdr, "/ack/%d" % (len(events) - 1))
        print(r.getheader("Content-Type"), ",".join(events))
    elif cmd == "watch":
        stop = sys.argv[4]
        while not os.path.exists(stop):
            try:
                pod = pod_of(get(host, hdr, "/watch", timeout=10))
            except OSError as e:
                pod = "error:" + type(e).__name__
            print("%.3f %s" % (time.time(), pod), flush=True)
            time.sleep(0.02)


if __name__ == "__main__":
    main()
