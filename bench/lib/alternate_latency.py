"""Latency of two routes measured request by request in alternation, so
that the machine's load (which swings by a factor of ten on the shared test
machine within seconds) hits both alike. Run inside the cluster network
(sandbox exec): one kept-alive connection per host, N requests on each,
A, B, A, B, ...; prints "P50_A P50_B MEDIAN_OF_B_MINUS_A" in ms.

    python3 alternate_latency.py HOST_A HOST_B N 'Header: value'
"""
import http.client
import statistics
import sys
import time


def main():
    host_a, host_b, n, header = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    name, _, value = header.partition(":")
    headers = {name.strip(): value.strip()}
    conns = [http.client.HTTPConnection(h, 80, timeout=10) for h in (host_a, host_b)]
    times = ([], [])
    for i in range(n + 20):
        pair = []
        for k in (0, 1):
            t = time.perf_counter()
            conns[k].request("GET", "/", headers=headers)
            r = conns[k].getresponse()
            r.read()
            pair.append((time.perf_counter() - t) * 1000)
        if i >= 20:          # the first requests open the connections
            times[0].append(pair[0])
            times[1].append(pair[1])
    diffs = [b - a for a, b in zip(*times)]
    print("%.3f %.3f %.3f" % (statistics.median(times[0]), statistics.median(times[1]), statistics.median(diffs)))


if __name__ == "__main__":
    main()
