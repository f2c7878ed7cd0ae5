#!/usr/bin/env bash
# bench/kubeconfig-parse.sh: is loading a kubeconfig linear in its size, and
# how does it compare with kubectl on the same files?
#
# Three families of generated kubeconfigs, each at sizes x, 2x and 4x:
#   realistic  N clusters, users and contexts, each cluster with 1.5 KB of
#              certificate-authority-data (N = 1000, 2000, 4000);
#   nested     N entries each nested 990 levels deep ("[[[...]]]", the most
#              expensive shape the limits allow: libyaml's scanner does work
#              proportional to the depth for every token) (N = 200, 400, 800);
#   deep       one "[[[..." of 200 KB, 400 KB, 800 KB (refused at once:
#              deeper than 1000 levels; this took 36 s for 200 KB before).
# `czctl config view` and `kubectl config view` run interleaved on every
# file RUNS times; medians. Linear means each doubling of the input about
# doubles the time (ratio ~2; quadratic would be ~4). Writes the section
# "Kubeconfig parse time" of bench/RESULTS.md. Not a test.
#
# usage: bench/kubeconfig-parse.sh [RUNS]   (default 7)
set -euo pipefail
cd "$(dirname "$0")/.."
make -s all >/dev/null
RUNS=${1:-7}
command -v kubectl >/dev/null || { echo "bench/kubeconfig-parse.sh: kubectl is not on PATH" >&2; exit 1; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

python3 - "$RUNS" "$T" <<'PY'
import base64, os, statistics, subprocess, sys, time
sys.path.insert(0, "bench/lib")
from results import write_section

runs, tmp = int(sys.argv[1]), sys.argv[2]
ca = base64.b64encode(os.urandom(1100)).decode()

def realistic(n):
    out = ["apiVersion: v1", "kind: Config", "current-context: ctx-0", "clusters:"]
    out += ["- name: c-%d\n  cluster:\n    server: https://10.0.%d.%d:6443\n    certificate-authority-data: %s"
            % (i, i // 250, i % 250, ca) for i in range(n)]
    out.append("users:")
    out += ["- name: u-%d\n  user:\n    token: t0k3n-%d" % (i, i) for i in range(n)]
    out.append("contexts:")
    out += ["- name: ctx-%d\n  context: {cluster: c-%d, user: u-%d, namespace: ns-%d}" % (i, i, i, i) for i in range(n)]
    return "\n".join(out) + "\n"

def nested(n):
    d = 990
    return "clusters:\n" + ("- " + "[" * d + "]" * d + "\n") * n

def deep(kb):
    n = kb * 1024 // 2
    return "clusters: " + "[" * n + "]" * n + "\n"

families = [("realistic", realistic, [1000, 2000, 4000]),
            ("nested", nested, [200, 400, 800]),
            ("deep", deep, [200, 400, 800])]
files = []
for fam, gen, sizes in families:
    for s in sizes:
        path = os.path.join(tmp, "%s-%d.yaml" % (fam, s))
        with open(path, "w") as f:
            f.write(gen(s))
        files.append((fam, s, path, os.path.getsize(path)))

tools = {"czctl": lambda p: ["./czctl", "config", "view", "--kubeconfig", p],
         "kubectl": lambda p: ["kubectl", "config", "view", "--kubeconfig", p]}
times = {(t, f[2]): [] for t in tools for f in files}
devnull = open(os.devnull, "w")
for _ in range(runs):
    for fam, s, path, size in files:
        for t, argv in tools.items():
            t0 = time.perf_counter()
            subprocess.run(argv(path), stdout=devnull, stderr=devnull)
            times[(t, path)].append(time.perf_counter() - t0)
med = {k: statistics.median(v) for k, v in times.items()}

rows = ["| input | size | czctl | kubectl | czctl / kubectl |", "|---|---|---|---|---|"]
growth = []
for fam, gen, sizes in families:
    prev = None
    for s in sizes:
        path = os.path.join(tmp, "%s-%d.yaml" % (fam, s))
        size = os.path.getsize(path)
        c, k = med[("czctl", path)], med[("kubectl", path)]
        rows.append("| %s %d | %.0f KiB | %.1f ms | %.1f ms | %.2f |" % (fam, s, size / 1024, c * 1e3, k * 1e3, c / k))
        if prev:
            growth.append("%s %d -> %d: czctl x%.2f, kubectl x%.2f" % (fam, prev[0], s, c / prev[1], k / prev[2]))
        prev = (s, c, k)

load = open("/proc/loadavg").read().split()[:3]
section = "\n".join([
    "## Kubeconfig parse time",
    "",
    "Command: `bench/kubeconfig-parse.sh %d` (%d interleaved runs of `czctl config view` and `kubectl config view`"
    " on each generated file, median wall time, process start included). Machine: %d CPUs; load average before"
    " the report: %s." % (runs, runs, os.cpu_count(), " ".join(load)),
    "Inputs: *realistic* N clusters + users + contexts, 1.5 KB of CA data each; *nested* N entries nested 990 levels"
    " deep (the costliest shape within the limits); *deep* one `[[[...` of N KB (refused: deeper than 1000 levels;"
    " 36 s for 200 KB before the limit).",
    "",
] + rows + [
    "",
    "Time growth per doubling of the input (linear: about x2; quadratic: about x4; start-up cost makes small inputs"
    " grow less than x2):",
    "",
] + ["- " + g for g in growth] + [""])
write_section("bench/RESULTS.md", section)
print(section)
PY
