#!/usr/bin/env python3
"""sandbox up/status/down (issue 3, acceptance 7): down leaves no process and no listening socket."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apilib  # noqa: E402
import tap  # noqa: E402


def session_members(sid):
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open("/proc/%s/stat" % e) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(e))
    return out


def listening(port):
    with open("/proc/net/tcp") as f:
        for ln in f.readlines()[1:]:
            p = ln.split()
            if p[3] == "0A" and int(p[1].split(":")[1], 16) == port:
                return True
    return False


def listeners_of_session(sid):
    """ip:port (hex, as in /proc/net/tcp) of the sockets the session's processes listen on."""
    inodes = {}
    with open("/proc/net/tcp") as f:
        for ln in f.readlines()[1:]:
            p = ln.split()
            if p[3] == "0A":
                inodes[p[9]] = p[1]
    found = set()
    for pid in session_members(sid):
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    found.add(inodes[link[8:-1]])
        except OSError:
            continue
    return found


def all_listeners():
    with open("/proc/net/tcp") as f:
        return {ln.split()[1] for ln in f.readlines()[1:] if ln.split()[3] == "0A"}


class Down(unittest.TestCase):
    def test_up_status_down(self):
        "status reports running/stopped; down stops the server and every pod process and closes every socket"
        sb = apilib.Sandbox()
        try:
            sb.start()
            st = subprocess.run([apilib.SANDBOX, "status", sb.dir], capture_output=True, text=True)
            self.assertEqual(st.returncode, 0)
            self.assertIn("running " + sb.server, st.stdout)
            for f in ("kubeconfig", "server.key", "ca.key"):
                self.assertEqual(os.stat(os.path.join(sb.dir, f)).st_mode & 0o777, 0o600, f)
            sb.kubectl("apply", "-f", "-", stdin=json.dumps(apilib.deployment("web", replicas=2)))
            sb.kubectl("expose", "deployment", "web", "--port=80", "--target-port=8080")
            sb.kubectl("rollout", "status", "deployment/web", "--timeout=30s", timeout=60)
            pid = int(open(os.path.join(sb.dir, "server.pid")).read())
            members = session_members(pid)
            self.assertGreaterEqual(len(members), 3, "server and two pod processes")
            port = int(sb.server.rsplit(":", 1)[1])
            self.assertTrue(listening(port))
            socks = listeners_of_session(pid)
            # pods and the Service's ClusterIP listen in the cluster's own namespaces
            self.assertEqual(len(socks), 1, "only the API listens in this machine's namespace")
            r = sb.stop()
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(session_members(pid), [])
            self.assertFalse(listening(port))
            self.assertEqual(socks & all_listeners(), set())
            st = subprocess.run([apilib.SANDBOX, "status", sb.dir], capture_output=True, text=True)
            self.assertEqual((st.returncode, st.stdout.strip()), (3, "stopped"))
        finally:
            if sb.up:
                sb.stop()

    def test_down_reports_leftovers(self):
        "down SIGKILLs a process left in the sandbox session and fails loudly"
        import tempfile
        import time
        d = tempfile.mkdtemp(prefix="sandbox-api-leftover-")
        child = ("import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)")
        leader = subprocess.Popen(["python3", "-c", "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c',%r]); "
                                   "print('ready', flush=True); time.sleep(60)" % child],
                                  start_new_session=True, stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(leader.stdout.readline().strip(), "ready")
            deadline = time.monotonic() + 5
            while len(session_members(leader.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(len(session_members(leader.pid)), 2)
            with open(os.path.join(d, "server.pid"), "w") as f:
                f.write("%d\n" % leader.pid)
            r = subprocess.run([apilib.SANDBOX, "down", d], capture_output=True, text=True, timeout=30)
            leader.wait(5)
            self.assertEqual(r.returncode, 1)
            self.assertRegex(r.stderr, r"left behind: pid \d+ \(\S*python3 -c import signal,time")
            self.assertIn("were left behind and have been killed", r.stderr)
            self.assertEqual(session_members(leader.pid), [])
        finally:
            if leader.poll() is None:
                leader.kill()
            import shutil
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    tap.main()
