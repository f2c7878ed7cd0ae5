"""Traffic for bench/soak.sh, run inside the cluster network (sandbox exec):
N requests with the intercept header and N without, on kept-alive
connections; prints "ok FAILED" counts. A request with the header must be
answered by the local server ("laptop"), one without by a pod of the app.

    python3 soak_client.py HOST N HEADER_NAME HEADER_VALUE
"""
import http.client
import json
import sys


def run(host, n, header):
    ok = failed = 0
    conns = {True: http.client.HTTPConnection(host, 80, timeout=10),
             False: http.client.HTTPConnection(host, 80, timeout=10)}
    for i in range(2 * n):
        intercepted = i % 2 == 0
        conn = conns[intercepted]
        try:
            conn.request("GET", "/soak/%d" % i, headers=dict([header]) if intercepted else {})
            r = conn.getresponse()
            pod = json.loads(r.read()).get("pod", "")
            good = r.status == 200 and ((pod == "laptop") == intercepted)
        except (OSError, ValueError, http.client.HTTPException):
            good = False
            conn.close()
        ok, failed = (ok + 1, failed) if good else (ok, failed + 1)
    for c in conns.values():
        c.close()
    return ok, failed


if __name__ == "__main__":
    host, n, name, value = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    print("%d %d" % run(host, n, (name, value)))
