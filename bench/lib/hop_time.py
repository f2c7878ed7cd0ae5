"""Time a forwarding process spends per request, from an strace log of it:
`strace -f -ttt -yy -e trace=read,write,recvfrom,sendto,readv,writev -o LOG -p PID`
while requests pass one at a time. A request is a read on side IN followed by
a write on side OUT (the request forwarded), then a read on OUT and a write on
IN (the answer forwarded); the process's share is the time between each read
and the write that forwards it. Sides are given by a port that appears in the
decoded socket (`-yy`: TCP:[LOCAL->PEER]).

    python3 hop_time.py LOG IN_PORT OUT_PORT [PID]

(PID: read the ports of sockets strace could not decode, a process in another
network namespace, from /proc/PID/net/tcp while they are still open.)

prints "N MEDIAN_US P90_US MEDIAN_OUTSIDE_US": requests seen, the median and
90th percentile of the process's share (both directions, microseconds), and
the median time the request spent beyond OUT (from forwarding it to reading
the answer). strace stops the process at every system call, so the share is an
upper bound of the process's own time.
"""
import re
import statistics
import sys

LINE = re.compile(r"^(?:\d+\s+)?(\d+\.\d+)\s+(read|write|recvfrom|sendto|readv|writev)\((\d+)<([^>]*)>.*\)\s+=\s+(-?\d+)")


def socket_ports(pid):
    """inode -> [local port, remote port] of the TCP sockets in the network
    namespace of process pid (strace -yy cannot decode sockets of another
    namespace: it prints TCP:[INODE])."""
    ports = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = open("/proc/%s/net/%s" % (pid, name)).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            ports[f[9]] = [str(int(f[1].split(":")[1], 16)), str(int(f[2].split(":")[1], 16))]
    return ports


def side(decoded, in_port, out_port, inodes):
    ports = re.findall(r":(\d+)(?=[\]\-])", decoded)
    m = re.match(r"TCP6?:\[(\d+)\]$", decoded)
    if m:
        ports = inodes.get(m.group(1), [])
    if in_port in ports:
        return "in"
    if out_port in ports:
        return "out"
    return None


def main():
    log, in_port, out_port = sys.argv[1], sys.argv[2], sys.argv[3]
    inodes = socket_ports(sys.argv[4]) if len(sys.argv) > 4 else {}
    events = []
    for line in open(log, errors="replace"):
        m = LINE.match(line)
        if not m or int(m.group(5)) <= 0:
            continue
        s = side(m.group(4), in_port, out_port, inodes)
        if s:
            events.append((float(m.group(1)), s, m.group(2) in ("read", "recvfrom", "readv")))
    shares, outside = [], []
    state, t_in, t_fwd, t_ans = "idle", 0.0, 0.0, 0.0
    share = 0.0
    for t, s, is_read in events:
        if state == "idle" and s == "in" and is_read:
            state, t_in = "request", t
        elif state == "request" and s == "in" and is_read:
            t_in = t                      # (a ping, or more of the request: the last read counts)
        elif state == "request" and s == "out" and not is_read:
            share, t_fwd, state = t - t_in, t, "forwarded"
        elif state == "forwarded" and s == "out" and is_read:
            t_ans, state = t, "answer"
        elif state == "answer" and s == "in" and not is_read:
            shares.append((share + (t - t_ans)) * 1e6)
            outside.append((t_ans - t_fwd) * 1e6)
            state = "idle"
    if not shares:
        print("0 - - -")
        return
    shares.sort()
    print("%d %.0f %.0f %.0f" % (len(shares), statistics.median(shares), shares[int(0.9 * (len(shares) - 1))],
                                 statistics.median(outside)))


if __name__ == "__main__":
    main()
