"""Where a process's memory goes, from /proc/PID/smaps: RSS, PSS and private
(dirty + clean) per mapped file (libraries, the executable) and for the heap,
thread stacks and other anonymous memory, as a Markdown table of the largest
entries by RSS and a total line.

    python3 smaps_breakdown.py PID [ROWS]
"""
import os
import re
import sys


def breakdown(pid):
    rows, cur = {}, None
    with open("/proc/%s/smaps" % pid) as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                name = parts[5] if len(parts) > 5 else "[anonymous: thread stacks, mmap'd buffers]"
                cur = rows.setdefault(os.path.basename(name) if name.startswith("/") else name, [0, 0, 0])
            elif cur is not None:
                key, _, value = line.partition(":")
                if key == "Rss":
                    cur[0] += int(value.split()[0])
                elif key == "Pss":
                    cur[1] += int(value.split()[0])
                elif key in ("Private_Clean", "Private_Dirty"):
                    cur[2] += int(value.split()[0])
    return rows


def main():
    pid = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    rows = breakdown(pid)
    total = [sum(v[i] for v in rows.values()) for i in range(3)]
    libs = [sum(v[i] for k, v in rows.items() if ".so" in k) for i in range(3)]
    mib = lambda kib: "%.2f" % (kib / 1024)
    print("| mapping | RSS MiB | PSS MiB | private MiB |")
    print("|---|---|---|---|")
    for name, v in sorted(rows.items(), key=lambda kv: -kv[1][0])[:n]:
        if v[0]:
            print("| %s | %s | %s | %s |" % (name, mib(v[0]), mib(v[1]), mib(v[2])))
    print("| all shared libraries (%d) | %s | %s | %s |" % (sum(1 for k in rows if ".so" in k), mib(libs[0]),
                                                          mib(libs[1]), mib(libs[2])))
    print("| **total** | **%s** | **%s** | **%s** |" % (mib(total[0]), mib(total[1]), mib(total[2])))


if __name__ == "__main__":
    main()
