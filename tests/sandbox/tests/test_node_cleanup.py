#!/usr/bin/env python3
# tests/run: alone
# (it compares the whole machine before and after: no other sandbox of this run may come or go meanwhile)
"""Clean-up (issue 8, acceptance 6): `down`, or the death of the process that
owns the sandbox (even by SIGKILL), removes every namespace, interface, route,
mount, cgroup and process the sandbox made; what is compared is listed before
`up` and after `down`. The shared unreachable routes stay while any sandbox
runs and go with the last one."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nodelib as nl  # noqa: E402
import tap  # noqa: E402
from k8s import netns, network  # noqa: E402


def wait_for(fn, timeout=15, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def machine_state(mine=None):
    """Everything the sandboxes of this machine made that carries their id, and
    the shared routes, minus what belongs to running sandboxes other than `mine`."""
    with network._Lock():
        users = network._users()
    others = [sid for sid, user in users.items() if network._alive(user) and sid != mine]
    state = set()
    for n in network._netns_with(network.ID_PREFIX):
        state.add("netns " + n)
    for n in network._links_with(network.ID_PREFIX):
        state.add("interface " + n)
    for m in network._mounts_with(network.ID_PREFIX):
        state.add("mount " + m)
    for c in network._cgroups_with(network.ID_PREFIX):
        state.add("cgroup " + c)
    state = {s for s in state if not any(o in s for o in others)}
    routes = set(network.cluster_routes_present())
    if not others:
        for r in routes:
            state.add("route unreachable " + r)
    return state


def start_of(pid):
    """A process's start time (/proc/PID/stat field 22), None when it is gone or a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def processes_in(inodes, sid=None):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.stat("/proc/%s/ns/net" % d).st_ino in inodes:
                out.append(int(d))
                continue
            if sid is not None:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid and fields[0] != "Z":
                    out.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return out


class CleanUp(unittest.TestCase):
    """Acceptance 6: `down`, or the owner's death, removes every namespace,
    interface, route, mount, cgroup and process the sandbox made."""

    def busy_sandbox(self, env=None):
        """A sandbox with pods (their containers in cgroups named with its id),
        a process inside the cluster network, and a mount named with its id;
        returns (dir, network info, server pid, its processes as (pid, start time)):
        the processes are taken while it runs, because once its namespaces are
        gone their inode numbers (and pids) may be reused by other sandboxes."""
        d = tempfile.mkdtemp(prefix="sandbox-net-")
        self.dirs = getattr(self, "dirs", []) + [d]
        r = subprocess.run([nl.SANDBOX, "up", d], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, **(env or {})))
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.load(open(os.path.join(d, "network.json")))
        kc = dict(os.environ, KUBECONFIG=os.path.join(d, "kubeconfig"))
        subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(nl.deployment("e", "sandbox/echo", 2)),
                       env=kc, check=True, capture_output=True, text=True)
        subprocess.run(["kubectl", "rollout", "status", "deployment/e", "--timeout=20s"], env=kc, check=True,
                       capture_output=True)
        subprocess.Popen([nl.SANDBOX, "exec", d, "--", "sleep", "300"], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sid = info["id"]
        mp = os.path.join(d, "%s-runtime-test" % sid)
        os.mkdir(mp)
        netns.mount("tmpfs", mp, "tmpfs", 0)
        inodes = {netns.inode(netns.path_of(n)) for n in network._netns_with(sid)} - {None}
        wait_for(lambda: len(processes_in(inodes)) >= 3, what="pods and the exec process in the namespaces")
        pid = int(open(os.path.join(d, "server.pid")).read())
        procs = {(p, start_of(p)) for p in processes_in(inodes, sid=pid)}
        return d, info, pid, procs

    def tearDown(self):
        for d in getattr(self, "dirs", []):
            subprocess.run([nl.SANDBOX, "down", d], capture_output=True, timeout=60)
            shutil.rmtree(d, ignore_errors=True)

    def check_nothing_left(self, before, info, pid, procs):
        self.assertEqual(network.leftovers(info["id"]), [])
        self.assertEqual(sorted(p for p, start in procs if start is not None and start_of(p) == start), [])
        # nothing is left that was not there before (other engineers' or CI runs'
        # sandboxes may end meanwhile: what was there may be gone)
        self.assertEqual(machine_state() - before, set())

    def test_down_removes_everything(self):
        before = machine_state()
        d, info, pid, procs = self.busy_sandbox()
        during = machine_state(info["id"]) - before
        sid = info["id"]
        for item in ("netns %s" % sid, "interface %s" % sid, "netns %s-exec" % sid,
                     "cgroup /sys/fs/cgroup/memory/%s" % sid, "cgroup /sys/fs/cgroup/cpu/%s" % sid):
            self.assertIn(item, during)
        containers = [c for c in during if c.startswith("cgroup /sys/fs/cgroup/memory/%s/pod" % sid)
                      and c.endswith("/main")]
        self.assertEqual(len(containers), 2, "the two echo containers' cgroups: %s" % sorted(during))
        r = subprocess.run([nl.SANDBOX, "down", d], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.check_nothing_left(before, info, pid, procs)

    def test_the_owner_killed_with_sigkill_leaves_nothing(self):
        before = machine_state()
        owner = subprocess.Popen(["sleep", "300"])   # plays the test that owns the sandbox
        try:
            d, info, pid, procs = self.busy_sandbox({"SANDBOX_OWNER_PID": str(owner.pid)})
            owner.send_signal(signal.SIGKILL)
            owner.wait()
            wait_for(lambda: not nl.alive(pid), timeout=15, what="the cluster stopping after its owner died")
            self.check_nothing_left(before, info, pid, procs)
        finally:
            if owner.poll() is None:
                owner.kill()

    def test_down_cleans_up_after_a_cluster_process_killed_with_sigkill(self):
        before = machine_state()
        d, info, pid, procs = self.busy_sandbox()
        os.kill(pid, signal.SIGKILL)
        r = subprocess.run([nl.SANDBOX, "down", d], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1, "down reports what it had to clean up")
        # what it names: its namespaces, or, when another sandbox's `up` on this
        # machine pruned those first, at least its containers' cgroups
        self.assertRegex(r.stderr, r"left behind: (netns|cgroup) \S*%s" % info["id"])
        self.check_nothing_left(before, info, pid, procs)


    def test_unreachable_routes_stay_while_any_sandbox_runs(self):
        both = [str(network.POD_CIDR), str(network.SERVICE_CIDR)]
        with network._Lock():
            alone = not any(network._alive(u) for u in network._users().values())
        if alone:
            self.assertEqual(network.cluster_routes_present(), [], "no sandbox, no routes")
        dirs = []
        for _ in range(2):
            d = tempfile.mkdtemp(prefix="sandbox-net-")
            self.dirs = getattr(self, "dirs", []) + [d]
            r = subprocess.run([nl.SANDBOX, "up", d], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            dirs.append(d)
            self.assertEqual(sorted(network.cluster_routes_present()), sorted(both))
        a, b = (json.load(open(os.path.join(d, "network.json"))) for d in dirs)
        self.assertNotEqual(a["hostLinkCIDR"], b["hostLinkCIDR"], "each sandbox has its own host link")
        subprocess.run([nl.SANDBOX, "down", dirs[0]], capture_output=True, timeout=60, check=True)
        self.assertEqual(sorted(network.cluster_routes_present()), sorted(both), "the other sandbox still runs")
        subprocess.run([nl.SANDBOX, "down", dirs[1]], capture_output=True, timeout=60, check=True)
        if alone:
            self.assertEqual(network.cluster_routes_present(), [], "the last down removes them")
        else:
            print("# another sandbox runs on this machine: the routes stay, as they should")


if __name__ == "__main__":
    tap.main()
