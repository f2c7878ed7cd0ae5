/*
 * test_sys.c: czctl.core.sys: time, environment, XDG directories, atomic
 * files, random ids and the signal state recipes roll back on.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>

#include "harness.h"

int main(void)
{
    lua_State *L = t_state_tmp();   /* proc, sys, tmp */
    t_setup(L, LUA(
        function mode_of(path) return io.popen("stat -c %a " .. path):read("l") end
        function signal_self(sig, delay)
            return assert(proc.spawn{ argv = {"sh", "-c", string.format("sleep %s; kill -%s %d",
                                      delay or 0, sig, sys.getpid())}, stdout = "null" })
        end
        local warm = proc.spawn{ argv = {"true"} }; warm:wait(5); warm:close()
    ));
    int fds_before = t_count_fds("self");

    t_lua(L, "now is monotonic and time is the wall clock", LUA(
        local a = sys.now(); local b = sys.now()
        return b >= a and math.abs(sys.time() - os.time()) < 2
    ));

    t_lua(L, "sleep waits at least the time asked", LUA(
        local t0 = sys.now(); local ok = sys.sleep(0.1); local dt = sys.now() - t0
        return ok == true and dt >= 0.099 and dt < 1, tostring(dt)
    ));

    t_lua(L, "misuse raises: negative sleep, non-integer fd, bad random length, bad mode", LUA(
        return not pcall(sys.sleep, -1) and not pcall(sys.isatty, "x") and
               not pcall(sys.random_id, 0) and not pcall(sys.random_id, 5000) and
               not pcall(sys.write_file, tmp .. "/x", "d", 99999) and
               not pcall(sys.wait_signal, -1)
    ));

    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    lua_pushinteger(L, devnull);
    lua_setglobal(L, "devnull_fd");
    t_lua(L, "isatty is false for /dev/null and for a closed fd", LUA(
        return sys.isatty(devnull_fd) == false and sys.isatty(1000) == false
    ));
    close(devnull);

    t_lua(L, "getenv and environ see the process environment", LUA(
        local env = sys.environ()
        return sys.getenv("PATH") == os.getenv("PATH") and env.PATH == os.getenv("PATH") and
               sys.getenv("CZCTL_SURELY_UNSET_VARIABLE") == nil
    ));

    t_lua(L, "exe, getpid and hostname describe this process", LUA(
        local exe = sys.exe()
        local stat_pid = tonumber(io.open("/proc/self/stat"):read("a"):match("^(%d+)"))
        local host = io.open("/proc/sys/kernel/hostname"):read("l")
        return exe:sub(1, 1) == "/" and exe:match("/test_sys$") and stat_pid == sys.getpid() and
               sys.hostname() == host, exe .. " " .. sys.hostname()
    ));

    setenv("XDG_CONFIG_HOME", "/xdg/config", 1);
    setenv("XDG_STATE_HOME", "relative/state", 1);
    setenv("HOME", "/home/tester", 1);
    t_lua(L, "config_dir and state_dir follow XDG (relative values are ignored)", LUA(
        return sys.config_dir() == "/xdg/config/czctl" and
               sys.state_dir() == "/home/tester/.local/state/czctl",
               sys.config_dir() .. " " .. sys.state_dir()
    ));
    unsetenv("XDG_CONFIG_HOME");
    unsetenv("XDG_STATE_HOME");
    t_lua(L, "without XDG variables the directories are under HOME", LUA(
        return sys.config_dir() == "/home/tester/.config/czctl" and
               sys.state_dir() == "/home/tester/.local/state/czctl"
    ));

    t_lua(L, "mkdir_p creates nested directories, is idempotent and refuses files", LUA(
        local d = tmp .. "/a/b/c"
        local ok1 = sys.mkdir_p(d)
        local ok2 = sys.mkdir_p(d)
        assert(sys.write_file(tmp .. "/file", "x"))
        local ok3, err, code = sys.mkdir_p(tmp .. "/file/sub")
        local ok4, err4 = sys.mkdir_p(tmp .. "/file")
        return ok1 and ok2 and mode_of(d) == "700" and ok3 == nil and type(err) == "string" and
               code == 20 and ok4 == nil and err4:find("Not a directory"),
               tostring(err) .. " " .. tostring(code) .. " " .. tostring(err4)
    ));

    t_lua(L, "lstat tells kind, permission bits and owner, and does not follow links", LUA(
        local d = tmp .. "/st"
        assert(sys.mkdir_p(d, tonumber("750", 8)))
        assert(sys.write_file(d .. "/f", "x", tonumber("640", 8)))
        os.execute("ln -s f '" .. d .. "/l'")
        local sd, sf, sl = sys.lstat(d), sys.lstat(d .. "/f"), sys.lstat(d .. "/l")
        local none, err, code = sys.lstat(d .. "/missing")
        return sd.kind == "dir" and sd.mode == tonumber("750", 8) and sd.uid == sys.getuid()
               and sf.kind == "file" and sf.mode == tonumber("640", 8) and sl.kind == "link"
               and none == nil and err:find("No such file") and code == 2,
               string.format("%s %o %s %s %s", sd.kind, sd.mode, sf.kind, sl.kind, tostring(err))
    ));

    t_lua(L, "write_file is atomic, 0600 by default, binary-safe and leaves no temp file", LUA(
        local path = tmp .. "/w/state.json"
        assert(sys.mkdir_p(tmp .. "/w"))
        local data = "a\0b" .. string.rep("z", 100000)
        assert(sys.write_file(path, "old"))
        local ok = sys.write_file(path, data)
        local back = sys.read_file(path)
        local names = table.concat(sys.listdir(tmp .. "/w"), ",")
        assert(sys.write_file(tmp .. "/w/public", "p", tonumber("644", 8)))
        return ok and back == data and mode_of(path) == "600" and mode_of(tmp .. "/w/public") == "644"
               and names == "state.json", names
    ));

    t_lua(L, "write_file into a missing directory fails with a message and leaves nothing", LUA(
        local ok, err, code = sys.write_file(tmp .. "/nope/f", "x")
        return ok == nil and err:find("nope/f", 1, true) and code == 2, err
    ));

    t_lua(L, "read_file reads files of any size, /proc files included", LUA(
        local status = sys.read_file("/proc/self/status")
        local big = string.rep("0123456789", 50000)
        assert(sys.write_file(tmp .. "/big", big))
        local nope, err, code = sys.read_file(tmp .. "/missing")
        return status:find("Pid:") and sys.read_file(tmp .. "/big") == big and nope == nil and
               err:find("No such file") and code == 2
    ));

    t_lua(L, "remove deletes files and empty directories; listdir is sorted", LUA(
        local d = tmp .. "/l"
        assert(sys.mkdir_p(d .. "/sub"))
        for _, n in ipairs({"b", "a", "c"}) do assert(sys.write_file(d .. "/" .. n, n)) end
        local before = table.concat(sys.listdir(d), ",")
        assert(sys.remove(d .. "/a")); assert(sys.remove(d .. "/sub"))
        local after = table.concat(sys.listdir(d), ",")
        local gone, err = sys.remove(d .. "/a")
        local none, err2 = sys.listdir(d .. "/missing")
        return before == "a,b,c,sub" and after == "b,c" and gone == nil and err and none == nil and err2,
               before .. " | " .. after
    ));

    t_lua(L, "random_id gives n characters of [a-z0-9], different every time", LUA(
        local seen = {}
        for _ = 1, 100 do
            local id = sys.random_id(12)
            if #id ~= 12 or id:find("[^a-z0-9]") or seen[id] then return false, id end
            seen[id] = true
        end
        local long = sys.random_id(4096)
        local chars = {}
        for c in long:gmatch(".") do chars[c] = true end
        local n = 0
        for _ in pairs(chars) do n = n + 1 end
        return n == 36, "distinct characters: " .. n
    ));

    t_lua(L, "a pending signal is reported until cleared; the first one wins", LUA(
        assert(sys.pending_signal() == nil)
        os.execute("kill -TERM " .. sys.getpid())
        local a, b = sys.pending_signal(), sys.pending_signal()
        local p, why = proc.spawn{ argv = {"true"} }
        os.execute("kill -HUP " .. sys.getpid())
        local c = sys.pending_signal()
        local waited = sys.wait_signal(5)
        sys.clear_signal()
        return a == "SIGTERM" and b == "SIGTERM" and c == "SIGTERM" and waited == "SIGTERM" and
               p == nil and why == "interrupted" and sys.pending_signal() == nil
    ));

    t_lua(L, "wait_signal times out with nil and wakes on SIGINT", LUA(
        local t0 = sys.now()
        local none = sys.wait_signal(0.1)
        local dt1 = sys.now() - t0
        local k = signal_self("INT", 0.2)
        t0 = sys.now()
        local got = sys.wait_signal(10)
        local dt2 = sys.now() - t0
        sys.clear_signal(); k:wait(5); k:close()
        return none == nil and dt1 >= 0.099 and got == "SIGINT" and dt2 < 3,
               string.format("%s %s %s", tostring(got), dt1, dt2)
    ));

    t_lua(L, "a signal interrupts sleep", LUA(
        local k = signal_self("TERM", 0.2)
        local t0 = sys.now()
        local ok, why = sys.sleep(10)
        local dt = sys.now() - t0
        sys.clear_signal(); k:wait(5); k:close()
        return ok == nil and why == "interrupted" and dt < 3, tostring(why) .. " " .. dt
    ));

    t_lua(L, "under the shield a signal is recorded but interrupts no call; lowered, it is pending", LUA(
        local d1 = sys.shield_signals(true)
        local k = signal_self("INT", 0.1)
        local t0 = sys.now()
        local slept = sys.sleep(0.6)
        local dt = sys.now() - t0
        k:wait(5); k:close()
        os.execute("kill -TERM " .. sys.getpid())
        local hidden, seen = sys.pending_signal(), sys.pending_signal(true)
        local p = proc.spawn{ argv = {"true"} }
        local code = p and p:wait(5); if p then p:close() end
        local waited = sys.wait_signal(0.1)
        local d2 = sys.shield_signals(true)
        local d3 = sys.shield_signals(false)
        local still = sys.pending_signal()
        local d4 = sys.shield_signals(false)
        local after = sys.pending_signal()
        t0 = sys.now()
        local woke = sys.wait_signal(5)
        local ok, why = sys.sleep(5)
        local dt2 = sys.now() - t0
        sys.clear_signal()
        return d1 == 1 and slept == true and dt >= 0.59 and hidden == nil and seen == "SIGINT" and
               code == 0 and waited == nil and d2 == 2 and d3 == 1 and still == nil and d4 == 0 and
               after == "SIGINT" and woke == "SIGINT" and ok == nil and why == "interrupted" and dt2 < 1,
               string.format("%s %s %s %s %s %s %s", tostring(slept), dt, tostring(seen), tostring(code),
                             tostring(still), tostring(after), tostring(why))
    ));

    t_lua(L, "the shield never goes below 0 and takes only a boolean", LUA(
        return sys.shield_signals(false) == 0 and sys.shield_signals() == 0 and
               not pcall(sys.shield_signals, "yes") and sys.shield_signals() == 0
    ));

    {
        /* C level: while shielded the self-pipe stays quiet and
         * czctl_wait_fd runs to its timeout; lowered, the pipe is readable. */
        czctl_signal_clear();
        czctl_signal_shield(1);
        raise(SIGHUP);
        struct pollfd pfd = {.fd = czctl_signal_fd(), .events = POLLIN};
        int quiet = poll(&pfd, 1, 0) == 0;
        int pending = czctl_signal_pending(), recorded = czctl_signal_recorded();
        int waited = czctl_wait_fd(-1, POLLIN, 0.05);
        czctl_signal_shield(0);
        int readable = poll(&pfd, 1, 0) == 1;
        int after = czctl_signal_pending(), woke = czctl_wait_fd(-1, POLLIN, 5);
        czctl_signal_clear();
        char diag[128];
        snprintf(diag, sizeof diag, "quiet=%d pending=%d recorded=%d waited=%d readable=%d after=%d woke=%d",
                 quiet, pending, recorded, waited, readable, after, woke);
        t_ok(quiet && pending == 0 && recorded == SIGHUP && waited == 0 && readable && after == SIGHUP &&
                 woke == -2,
             "C: shielded, the self-pipe stays quiet and waits time out; lowered, the pipe wakes pollers", diag);
    }

    t_remove_tmp(L);
    t_no_fd_leak(fds_before, "no file descriptors leak, failures included");
    lua_close(L);
    return t_done();
}
