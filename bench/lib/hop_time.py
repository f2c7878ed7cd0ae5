"""Time a forwarding process spends per request, from a `perf trace` of it
(`perf trace -o LOG -p PID -e read,write,recvfrom,sendto,readv,writev`: kernel
tracepoints, the process is never stopped) while requests pass one at a time.
A request is a read on side IN, then the write on side OUT that forwards it,
then a read on OUT (the answer) and the write on IN that forwards it; the
process's share is the time from each read to its forwarding write (the end
of one system call to the start of the next). A side is the sockets whose
local or remote port is the one given (sockets of PID, read from
/proc/PID/fd and /proc/PID/net/tcp while they are still open: keep-alive
connections are). Requests must pass one at a time; the relay's pings on idle
streams pass rarely enough not to move the median.

    python3 hop_time.py LOG PID IN_PORT OUT_PORT

prints "N MEDIAN_US P90_US MEDIAN_BEYOND_US": requests seen, the median and
90th percentile of the process's share (both directions, microseconds), and
the median time from forwarding a request to reading its answer (everything
beyond OUT).
"""
import os
import re
import statistics
import sys

LINE = re.compile(r"^\s*([\d.]+) \(\s*([\d.]+) ms\): (?:\S+/\d+ )?(read|write|recvfrom|sendto|readv|writev)"
                  r"\(fd: (\d+)[<,)].*=\s+(-?\d+)")
READS = ("read", "recvfrom", "readv")


def socket_ports(pid):
    """fd -> {local port, remote port} of the TCP sockets of process pid."""
    by_inode = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = open("/proc/%s/net/%s" % (pid, name)).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            by_inode[f[9]] = {str(int(f[1].split(":")[1], 16)), str(int(f[2].split(":")[1], 16))}
    fds = {}
    for fd in os.listdir("/proc/%s/fd" % pid):
        try:
            m = re.match(r"socket:\[(\d+)\]", os.readlink("/proc/%s/fd/%s" % (pid, fd)))
        except OSError:
            continue
        if m and m.group(1) in by_inode:
            fds[fd] = by_inode[m.group(1)]
    return fds


def main():
    log, pid, in_port, out_port = sys.argv[1:5]
    fds = socket_ports(pid)
    calls = []
    for line in open(log, errors="replace"):
        m = LINE.match(line)
        if not m or int(m.group(5)) <= 0 or m.group(4) not in fds:
            continue
        ports, fd = fds[m.group(4)], m.group(4)
        side = "in" if in_port in ports else "out" if out_port in ports else None
        if side:
            start = float(m.group(1))
            calls.append((start, start + float(m.group(2)), side, fd, m.group(3) in READS))
    shares, beyond = [], []
    state, read_end, fwd_at, share = "idle", 0.0, 0.0, 0.0
    for start, end, side, fd, is_read in calls:
        if side == "in" and is_read and state in ("idle", "request"):
            state, read_end = "request", end       # (the last read of a request counts)
        elif side == "out" and not is_read and state == "request":
            state, share, fwd_at = "forwarded", start - read_end, start
        elif side == "out" and is_read and state in ("forwarded", "answer"):
            state, read_end = "answer", end
        elif side == "in" and not is_read and state == "answer":
            shares.append((share + start - read_end) * 1000)
            beyond.append((read_end - fwd_at) * 1000)
            state = "idle"
    if not shares:
        print("0 - - -")
        return
    shares.sort()
    print("%d %.0f %.0f %.0f" % (len(shares), statistics.median(shares), shares[int(0.9 * (len(shares) - 1))],
                                 statistics.median(beyond)))


if __name__ == "__main__":
    main()
