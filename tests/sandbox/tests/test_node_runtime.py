#!/usr/bin/env python3
"""The container runtime (k8s/runtime.py) without a cluster: what a process
started in a container sees, and what a process exec'd into it sees
(the same namespaces, root, user, capabilities, environment and cgroup)."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import nodelib  # noqa: E402,F401  (puts tests/lib on sys.path)
import tap  # noqa: E402
from k8s import images  # noqa: E402
from k8s import runtime  # noqa: E402

SID = "test%06d" % (os.getpid() % 1000000)


class Box:
    """One container: an nginx-unprivileged layer, a volume, a hostname, cgroups."""

    def __init__(self, name, argv, memory=None, **spec):
        self.dir = tempfile.mkdtemp(prefix="runtime-")
        self.root = os.path.join(self.dir, "rootfs")
        os.makedirs(self.root)
        images.populate(self.root, os.path.join(self.dir, "usr"), "nginx-unprivileged")
        self.vol = os.path.join(self.dir, "vol")
        os.makedirs(self.vol)
        with open(os.path.join(self.vol, "data.txt"), "w") as f:
            f.write("from the volume\n")
        self.uts = runtime.new_uts_namespace(name)
        self.cgroup = runtime.Cgroup(SID, name, "main").create(memory_bytes=memory)
        self.spec = {"root": self.root, "readonly_root": True, "uts_fd": self.uts,
                     "mounts": [{"source": self.vol, "target": "/data", "readonly": True},
                                {"source": os.path.join(self.dir, "tmp"), "target": "/tmp"}],
                     "cgroup_procs": self.cgroup.procs_files(), "uid": 101, "gid": 101, "groups": [101],
                     "caps": runtime.capabilities({"capabilities": {"drop": ["ALL"]}}), "no_new_privs": True,
                     "env": {"PATH": images.PATH, "GREETING": "hello"}, "cwd": "/", "argv": argv}
        os.makedirs(os.path.join(self.dir, "tmp"))
        os.chmod(os.path.join(self.dir, "tmp"), 0o777)   # as an emptyDir
        self.spec.update(spec)
        self.log = open(os.path.join(self.dir, "log"), "w+b")
        self.proc = None

    def start(self):
        self.proc = runtime.launch(self.spec, self.log, self.log)
        return self.proc

    def output(self):
        self.log.seek(0)
        return self.log.read().decode()

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.cgroup.remove()
        os.close(self.uts)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def tearDownModule():
    for c in runtime.CONTROLLERS:   # each Box removed its own cgroups
        try:
            os.rmdir(runtime.cgroup_base(SID, c))
        except FileNotFoundError:
            pass


class ContainerTest(unittest.TestCase):
    def test_process_sees_its_image_user_hostname_and_read_only_root(self):
        box = Box("web-1", ["sh", "-c", "id; hostname; cat /data/data.txt; touch /x 2>&1; touch /data/y 2>&1; "
                                        "touch /tmp/z && echo tmp-writable; ls /etc/nginx/nginx.conf; "
                                        "stat -c '%u:%g %a' /etc/nginx /var/cache/nginx; "
                                        "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; echo $GREETING"])
        try:
            box.start().wait(10)
            out = box.output()
        finally:
            box.close()
        for want in ("uid=101(nginx) gid=101(nginx) groups=101(nginx)", "web-1", "from the volume",
                     "touch: cannot touch '/x': Read-only file system",
                     "touch: cannot touch '/data/y': Read-only file system", "tmp-writable",
                     "/etc/nginx/nginx.conf", "101:0 775\n101:0 775", "CapEff:\t0000000000000000",
                     "CapBnd:\t0000000000000000", "NoNewPrivs:\t1", "hello"):
            self.assertIn(want, out)

    def test_exec_joins_the_running_container(self):
        box = Box("exec-1", ["sleep", "30"], env={"PATH": images.PATH, "ONLY_IN_CONTAINER": "yes"})
        try:
            proc = box.start()
            ctx = runtime.ExecContext(box.spec, proc.pid)
            p = ctx.spawn(["sh", "-c", "id -u; hostname; echo $ONLY_IN_CONTAINER; cat /data/data.txt; "
                                       "grep -E 'memory' /proc/self/cgroup; touch /nope 2>&1; true"],
                          stdout=subprocess.PIPE)
            out = p.communicate(timeout=10)[0].decode()
            self.assertEqual(p.returncode, 0)
            for want in ("101\n", "exec-1\n", "yes\n", "from the volume",
                         "memory:/%s/podexec-1/main" % SID, "Read-only file system"):
                self.assertIn(want, out)
            with self.assertRaises(runtime.StartFailure) as cm:
                ctx.spawn(["no-such-tool"])
            self.assertEqual(cm.exception.message, 'OCI runtime exec failed: exec failed: unable to start container '
                             'process: exec: "no-such-tool": executable file not found in $PATH: unknown')
        finally:
            box.close()

    def test_exec_with_a_terminal_gets_it_as_controlling_terminal(self):
        box = Box("tty-1", ["sleep", "30"])
        master, slave = os.openpty()
        try:
            proc = box.start()
            p = runtime.ExecContext(box.spec, proc.pid).spawn(
                ["sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty; set -- $(cat /proc/$$/stat); "
                       "[ \"$7\" != 0 ] && echo ctty"],
                stdin=slave, stdout=slave, stderr=slave, tty=True)
            os.close(slave)
            slave = None
            p.wait(10)
            out = b""
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            self.assertEqual(out.decode().split(), ["is-a-tty", "ctty"])
        finally:
            os.close(master)
            if slave is not None:
                os.close(slave)
            box.close()

    def test_a_missing_command_is_a_start_error(self):
        box = Box("missing-1", ["no-such-server", "--flag"])
        try:
            with self.assertRaises(runtime.StartFailure) as cm:
                box.start()
            self.assertIn('exec: "no-such-server": executable file not found in $PATH', cm.exception.message)
            self.assertTrue(cm.exception.message.startswith(runtime.RUN_PREFIX))
        finally:
            box.close()

    def test_memory_limit_is_enforced_by_the_oom_killer(self):
        box = Box("oom-1", ["tail", "/dev/zero"], memory=16 << 20)
        try:
            rc = box.start().wait(30)
            self.assertEqual(rc, -9)
            self.assertTrue(box.cgroup.oom_killed())
        finally:
            box.close()

    def test_cgroup_limits_and_removal(self):
        cg = runtime.Cgroup(SID, "gone", "main").create(memory_bytes=32 << 20, cpu_millis=250)
        with open(os.path.join(cg.paths["cpu"], "cpu.cfs_quota_us")) as f:
            self.assertEqual(f.read().strip(), "25000")
        with open(os.path.join(cg.paths["memory"], "memory.limit_in_bytes")) as f:
            self.assertEqual(f.read().strip(), str(32 << 20))
        proc = subprocess.Popen(["sleep", "30"])
        with open(cg.procs_files()[0], "w") as f:
            f.write(str(proc.pid))
        cg.remove()
        self.assertEqual(proc.wait(5), -9, "what is left in the container's cgroup is killed")
        for path in cg.paths.values():
            self.assertFalse(os.path.exists(os.path.dirname(path)), "the pod's level goes with its last container")


class CapabilitiesTest(unittest.TestCase):
    def test_bounding_set_from_security_context(self):
        names = {v: k for k, v in runtime.CAPS.items()}
        cases = [
            ({}, set(runtime.DEFAULT_CAPS)),
            ({"capabilities": {"drop": ["ALL"]}}, set()),
            ({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}, {"NET_BIND_SERVICE"}),
            ({"capabilities": {"drop": ["NET_RAW", "CAP_CHOWN"]}}, set(runtime.DEFAULT_CAPS) - {"NET_RAW", "CHOWN"}),
            ({"capabilities": {"add": ["SYS_ADMIN"]}}, set(runtime.DEFAULT_CAPS) | {"SYS_ADMIN"}),
        ]
        for sc, want in cases:
            with self.subTest(sc=sc):
                self.assertEqual({names[n] for n in runtime.capabilities(sc)}, want)
        self.assertEqual(len(runtime.capabilities({"privileged": True})), runtime.cap_last() + 1)


if __name__ == "__main__":
    tap.main()
