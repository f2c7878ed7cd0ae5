#!/usr/bin/env bash
# bench/version.sh: start-up cost of `czctl version` against
# `kubectl version --client` (a Go binary doing the same job).
#
# Runs both commands interleaved (czctl, kubectl, czctl, ...) RUNS times,
# reports the median wall time of each and their ratio; then the peak RSS of
# each ("Maximum resident set size" of /usr/bin/time -v, over RSS_RUNS
# interleaved runs). Goal: ratio <= 0.15, czctl peak RSS < 8 MiB. (wait4's
# ru_maxrss is not used for memory: after posix_spawn it includes the
# parent's RSS.)
# Writes the figures into bench/RESULTS.md, section "czctl version vs kubectl".
# Not a test: nothing here fails on a slow machine.
#
# usage: bench/version.sh [RUNS]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps --bench
make -s all >/dev/null
RUNS=${1:-60}
command -v kubectl >/dev/null || { echo "bench/version.sh: kubectl is not on PATH" >&2; exit 1; }

python3 - "$RUNS" <<'PY'
import os, re, statistics, subprocess, sys, time

runs = int(sys.argv[1])
cmds = {"czctl": ["./czctl", "version"], "kubectl": ["kubectl", "version", "--client"]}
wall = {k: [] for k in cmds}
rss = {k: [] for k in cmds}
devnull = os.open(os.devnull, os.O_WRONLY)

def once(argv):
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ,
                          file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
    _, status, usage = os.wait4(pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("bench/version.sh: %s failed" % " ".join(argv))
    return dt, usage.ru_maxrss  # KiB

for name, argv in cmds.items():      # warm the page cache
    for _ in range(3):
        once(argv)
for _ in range(runs):                 # interleaved
    for name, argv in cmds.items():
        dt, _ = once(argv)
        wall[name].append(dt)
for _ in range(10):
    for name, argv in cmds.items():
        out = subprocess.run(["/usr/bin/time", "-v", *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, check=True).stderr
        rss[name].append(int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out).group(1)))

med = {k: statistics.median(v) for k, v in wall.items()}
peak = {k: max(v) for k, v in rss.items()}
ratio = med["czctl"] / med["kubectl"]
rows = [
    "| command | median wall time | peak RSS |",
    "|---|---|---|",
    "| `./czctl version` | %.2f ms | %.1f MiB |" % (med["czctl"] * 1e3, peak["czctl"] / 1024),
    "| `kubectl version --client` | %.2f ms | %.1f MiB |" % (med["kubectl"] * 1e3, peak["kubectl"] / 1024),
]
verdict = "ratio %.3f (goal <= 0.15): %s; czctl peak RSS %.1f MiB (goal < 8 MiB): %s" % (
    ratio, "met" if ratio <= 0.15 else "NOT met",
    peak["czctl"] / 1024, "met" if peak["czctl"] < 8 * 1024 else "NOT met")
kver = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True).stdout.split("\n")[0]
section = "\n".join([
    "## czctl version vs kubectl",
    "",
    "Command: `bench/version.sh %d` (%d interleaved runs of each, median wall time; peak" % (runs, runs),
    "RSS is the largest `/usr/bin/time -v` maximum RSS over 10 runs). Machine: %d CPUs, %s; %s." % (
        os.cpu_count(), os.uname().release, kver.strip()),
    "",
    *rows,
    "",
    "Median wall-time ratio czctl/kubectl: **%.3f**. %s." % (ratio, verdict),
    "",
])
print(section)

sys.path.insert(0, "bench/lib")
from results import write_section
write_section("bench/RESULTS.md", section)
PY
