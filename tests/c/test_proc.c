/*
 * test_proc.c: czctl.core.proc: spawn, pipes, timeouts, kill, detach, and
 * the absence of zombies and leaked file descriptors.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

/* The fds of a running child must be exactly 0, 1 and 2. */
static void check_child_fds(lua_State *L)
{
    /* an fd opened without O_CLOEXEC in the parent must not reach the child */
    int leaky = open("/dev/null", O_RDONLY);
    t_setup(L, LUA(child = proc.spawn{ argv = {"sleep", "30"}, stdin = "pipe" }));
    lua_getglobal(L, "child");
    lua_getfield(L, -1, "pid");
    lua_pushvalue(L, -2);
    lua_call(L, 1, 1);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)lua_tointeger(L, -1));
    lua_settop(L, 0);
    /* right after exec the dynamic loader briefly holds the files it maps
     * (ld.so.cache, libc): a leaked fd stays, a loader's goes */
    int n = t_count_fds(pid);
    for (int i = 0; i < 100 && n != 3; i++) {
        usleep(20000);
        n = t_count_fds(pid);
    }
    char diag[96];
    snprintf(diag, sizeof diag, "child has %d fds", n);
    t_ok(n == 3, "a spawned child holds only fds 0, 1 and 2 (even with a non-CLOEXEC fd open)", diag);
    t_setup(L, LUA(child:close(); child = nil));
    close(leaky);
}

int main(void)
{
    lua_State *L = t_state_tmp();   /* proc, sys, tmp */
    t_setup(L, LUA(
        function slurp(path) local f = io.open(path); if not f then return nil end
                             local s = f:read("a"); f:close(); return s end
        function until_true(fn, timeout)
            local deadline = sys.now() + timeout
            while sys.now() < deadline do if fn() then return true end sys.sleep(0.02) end
            return false
        end
        local warm = proc.spawn{ argv = {"true"} }; warm:wait(5); warm:close()
    ));
    /* the baseline includes the lazily created, process-wide self-pipes */
    int fds_before = t_count_fds("self");

    t_lua(L, "spawn reads stdout and stderr lines and the exit code", LUA(
        local p = assert(proc.spawn{ argv = {"sh", "-c", "echo hello; echo world >&2; exit 7"} })
        local out, err = p:read_line(5), p:read_line(5, "stderr")
        local eof, why = p:read_line(5)
        local code = p:wait(5)
        p:close()
        return out == "hello" and err == "world" and eof == nil and why == "eof" and code == 7,
               table.concat({tostring(out), tostring(err), tostring(why), tostring(code)}, " ")
    ));

    t_lua(L, "read_line returns timeout while the child is silent", LUA(
        local p = assert(proc.spawn{ argv = {"sleep", "10"} })
        local t0 = sys.now()
        local line, why = p:read_line(0.2)
        local dt = sys.now() - t0
        p:close()
        return line == nil and why == "timeout" and dt >= 0.19 and dt < 2, why .. " after " .. dt
    ));

    t_lua(L, "read_line returns a 1 MiB line whole and a last line without newline", LUA(
        local p = assert(proc.spawn{ argv = {"sh", "-c",
            "head -c 1048576 /dev/zero | tr \"\\\\0\" x; echo; printf tail"} })
        local big = p:read_line(10)
        local tail = p:read_line(10)
        local _, why = p:read_line(10)
        p:wait(5); p:close()
        return big and #big == 1048576 and not big:find("[^x]") and tail == "tail" and why == "eof",
               tostring(big and #big) .. " " .. tostring(tail) .. " " .. tostring(why)
    ));

    t_lua(L, "wait returns timeout, then 128+N after kill", LUA(
        local p = assert(proc.spawn{ argv = {"sleep", "10"}, stdout = "null", stderr = "null" })
        local code, why = p:wait(0.2)
        assert(code == nil and why == "timeout", why)
        assert(p:kill("KILL"))
        local killed = p:wait(5)
        local c2 = p:wait(0)
        local ok2, msg2 = p:kill("TERM")
        p:close()
        return killed == 137 and c2 == 137 and ok2 == nil and msg2 == "process has exited",
               tostring(killed) .. " " .. tostring(msg2)
    ));

    t_lua(L, "kill accepts TERM, SIGTERM and 15 and rejects unknown names", LUA(
        local codes = {}
        for _, sig in ipairs({"TERM", "SIGTERM", 15, "term"}) do
            local p = assert(proc.spawn{ argv = {"sleep", "10"} })
            assert(p:kill(sig)); codes[#codes + 1] = p:wait(5); p:close()
        end
        local p = assert(proc.spawn{ argv = {"sleep", "10"} })
        local ok, err = pcall(p.kill, p, "NOPE")
        p:close()
        return table.concat(codes, ",") == "143,143,143,143" and not ok and err:find("unknown signal"),
               table.concat(codes, ",") .. " " .. tostring(err)
    ));

    t_lua(L, "a missing command gives 'command not found', not an error", LUA(
        local p1, e1 = proc.spawn{ argv = {"czctl-no-such-command"} }
        local p2, e2 = proc.spawn{ argv = {"/nonexistent/bin/tool"} }
        local p3, e3 = proc.detach{ argv = {"czctl-no-such-command"} }
        return p1 == nil and e1 == "czctl-no-such-command: command not found" and
               p2 == nil and e2 == "/nonexistent/bin/tool: command not found" and
               p3 == nil and e3 == "czctl-no-such-command: command not found",
               tostring(e1) .. " | " .. tostring(e2) .. " | " .. tostring(e3)
    ));

    t_lua(L, "a program that cannot be executed reports why", LUA(
        local path = tmp .. "/not-executable"
        assert(sys.write_file(path, "#!/bin/sh\n", 384))
        local p, err = proc.spawn{ argv = {path} }
        return p == nil and err == path .. ": Permission denied", tostring(err)
    ));

    t_lua(L, "misuse raises: empty argv, bad stdio mode, non-string env", LUA(
        local a = pcall(proc.spawn, { argv = {} })
        local b = pcall(proc.spawn, { argv = {"true"}, stdout = "bogus" })
        local c = pcall(proc.spawn, { argv = {"true"}, env_extra = { X = {} } })
        local d = pcall(proc.spawn, "true")
        local e = pcall(proc.kill, 0)
        return not a and not b and not c and not d and not e
    ));

    t_lua(L, "env_extra adds to the environment and env replaces it", LUA(
        local p = assert(proc.spawn{ argv = {"sh", "-c", "echo \"$CZ_A-${HOME:-none}\""},
                                     env_extra = { CZ_A = "x" } })
        local added = p:read_line(5); p:wait(5); p:close()
        p = assert(proc.spawn{ argv = {"sh", "-c", "echo \"$CZ_A-${HOME:-none}\""},
                               env = { CZ_A = "y" } })
        local replaced = p:read_line(5); p:wait(5); p:close()
        return added == "x-" .. os.getenv("HOME") and replaced == "y-none",
               tostring(added) .. " " .. tostring(replaced)
    ));

    t_lua(L, "cwd sets the working directory; a missing one is reported", LUA(
        local p = assert(proc.spawn{ argv = {"pwd"}, cwd = tmp })
        local dir = p:read_line(5); p:wait(5); p:close()
        local q, err = proc.spawn{ argv = {"pwd"}, cwd = tmp .. "/missing" }
        return dir == tmp and q == nil and err:find("missing: No such file", 1, true),
               tostring(dir) .. " " .. tostring(err)
    ));

    t_lua(L, "stdin pipe: write, close_stdin, read back", LUA(
        local p = assert(proc.spawn{ argv = {"cat"}, stdin = "pipe" })
        assert(p:write("one\ntwo"))
        p:close_stdin()
        local a, b, c = p:read_line(5), p:read_line(5), p:read_line(5)
        local code = p:wait(5); p:close()
        local ok = pcall(p.write, p, "x")
        return a == "one" and b == "two" and c == nil and code == 0 and not ok
    ));

    t_lua(L, "stderr = \"stdout\" merges both streams into one pipe", LUA(
        local p = assert(proc.spawn{ argv = {"sh", "-c", "echo a; echo b >&2"}, stderr = "stdout" })
        local a, b = p:read_line(5), p:read_line(5)
        p:wait(5)
        local ok = pcall(p.read_line, p, 1, "stderr")
        p:close()
        return a == "a" and b == "b" and not ok
    ));

    t_lua(L, "stdout = {file=} appends to a 0600 file", LUA(
        local log = tmp .. "/out.log"
        for i = 1, 2 do
            local p = assert(proc.spawn{ argv = {"echo", "line" .. i}, stdout = { file = log } })
            p:wait(5); p:close()
        end
        local mode = io.popen("stat -c %a " .. log):read("l")
        return slurp(log) == "line1\nline2\n" and mode == "600", tostring(mode)
    ));

    t_lua(L, "close terminates a running child and reports 143", LUA(
        local p = assert(proc.spawn{ argv = {"sleep", "30"} })
        local pid = p:pid()
        local code = p:close()
        local again = p:close()
        return code == 143 and again == 143 and not proc.alive(pid), tostring(code)
    ));

    t_lua(L, "garbage collection and <close> terminate and reap children", LUA(
        local pid1, pid2
        do local p = assert(proc.spawn{ argv = {"sleep", "30"} }); pid1 = p:pid() end
        collectgarbage(); collectgarbage()
        do local p <close> = assert(proc.spawn{ argv = {"sleep", "30"} }); pid2 = p:pid() end
        return not proc.alive(pid1) and not proc.alive(pid2)
    ));

    check_child_fds(L);

    t_lua(L, "detach runs a helper in its own session that outlives the handle", LUA(
        local log = tmp .. "/helper.log"
        local pid = assert(proc.detach{ argv = {"sh", "-c", "echo started; exec sleep 30"},
                                         log = log, env_extra = { CZ_T = "1" } })
        assert(until_true(function() return slurp(log) == "started\n" end, 5), "no log line")
        local stat = slurp("/proc/" .. pid .. "/stat")
        local ppid = tonumber(stat:match("%) %a (%d+)"))
        local sid = tonumber(stat:match("%) %a %d+ %d+ (%d+)"))
        local my_sid = tonumber(slurp("/proc/self/stat"):match("%) %a %d+ %d+ (%d+)"))
        local fds = io.popen("ls /proc/" .. pid .. "/fd"):read("a")
        local alive = proc.alive(pid)
        assert(proc.kill(pid, "TERM"))
        local gone = until_true(function() return not proc.alive(pid) end, 5)
        local mode = io.popen("stat -c %a " .. log):read("l")
        return alive and gone and ppid ~= sys.getpid() and sid ~= my_sid and
               fds == "0\n1\n2\n" and mode == "600",
               string.format("ppid=%s sid=%s/%s fds=%q mode=%s", ppid, sid, my_sid, fds, mode)
    ));

    t_lua(L, "alive is false for an unused pid and kill on it fails politely", LUA(
        local ok, err = proc.kill(4194303, "TERM")
        return proc.alive(4194303) == false and ok == nil and err:find("No such process"), err
    ));

    t_lua(L, "a signal wakes wait, read_line and write with 'interrupted'", LUA(
        local results = {}
        for _, op in ipairs({"wait", "read_line", "write"}) do
            local p = assert(proc.spawn{ argv = {"sleep", "10"}, stdin = "pipe" })
            local killer = assert(proc.spawn{ argv = {"sh", "-c", "sleep 0.2; kill -TERM $PPID"},
                                              stdout = "null", stderr = "null" })
            local t0 = sys.now()
            local r, why
            if op == "wait" then r, why = p:wait(10)
            elseif op == "read_line" then r, why = p:read_line(10)
            else r, why = p:write(string.rep("x", 1 << 20)) end
            local dt = sys.now() - t0
            local sig = sys.pending_signal()
            sys.clear_signal()
            killer:wait(5); killer:close(); p:close()
            results[#results + 1] = string.format("%s:%s:%s:%s", op, tostring(why), sig, dt < 3)
        end
        local want = "wait:interrupted:SIGTERM:true read_line:interrupted:SIGTERM:true " ..
                     "write:interrupted:SIGTERM:true"
        return table.concat(results, " ") == want, table.concat(results, " ")
    ));

    t_lua(L, "spawn refuses to start while a signal is pending", LUA(
        local killer = assert(proc.spawn{ argv = {"kill", "-HUP", tostring(sys.getpid())} })
        killer:wait(5); killer:close()
        local p, why = proc.spawn{ argv = {"true"} }
        local sig = sys.pending_signal()
        sys.clear_signal()
        return p == nil and why == "interrupted" and sig == "SIGHUP", tostring(why)
    ));

    t_remove_tmp(L);
    lua_close(L);
    int zombies = t_count_zombies();
    char diag[64];
    snprintf(diag, sizeof diag, "%d zombie children", zombies);
    t_ok(zombies == 0, "no zombie children remain", diag);
    t_no_fd_leak(fds_before, "no file descriptors leak");
    czctl_curl_cleanup();
    return t_done();
}
