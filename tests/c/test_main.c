/*
 * test_main.c: the czctl executable as a whole (core/main.c): it runs alone
 * from any directory, starts without loading libcurl, loads it when a
 * script needs HTTP, and turns a signal received while a script waits into
 * exit code 143 / 130.
 */
#define _GNU_SOURCE
#include <stdio.h>

#include "harness.h"

int main(void)
{
    lua_State *L = t_state_tmp();   /* proc, sys, tmp */
    t_setup(L, LUA(
        root = os.getenv("CZCTL_ROOT") or sys.exe():match("^(.*)/tests/c/[^/]*$")
        czctl = root .. "/czctl"
        function run(argv, opts)
            opts = opts or {}
            opts.argv = argv
            local p = assert(proc.spawn(opts))
            local out, err = {}, {}
            for line in function() return p:read_line(20) end do out[#out + 1] = line end
            for line in function() return p:read_line(20, "stderr") end do err[#err + 1] = line end
            local code = p:wait(20); p:close()
            return code, table.concat(out, "\n"), table.concat(err, "\n")
        end
    ));

    t_lua(L, "czctl version runs from / with an empty environment", LUA(
        local code, out = run({czctl, "version"}, { cwd = "/", env = {} })
        return code == 0 and out:match("^czctl %d+%.%d+"), tostring(code) .. " " .. out
    ));

    t_lua(L, "czctl version does not load libcurl; a script doing HTTP does", LUA(
        local code, _, err = run({czctl, "version"}, { env_extra = { LD_DEBUG = "libs" } })
        local script = tmp .. "/http.lua"
        assert(sys.write_file(script, "local net = require \"czctl.core.net\"\n" ..
            "print(net.http{ url = \"http://127.0.0.1:\" .. net.free_port() .. \"/\", timeout = 2 })\n"))
        local code2, out2, err2 = run({czctl, "run", script}, { env_extra = { LD_DEBUG = "libs" } })
        return code == 0 and not err:find("libcurl", 1, true) and code2 == 0 and
               err2:find("libcurl.so.4", 1, true) and out2:find("^nil"),
               tostring(code2) .. " " .. out2
    ));

    t_lua(L, "a script blocked in wait_signal exits 143 on SIGTERM and 130 on SIGINT", LUA(
        local script = tmp .. "/wait.lua"
        assert(sys.write_file(script, "local sys = require \"czctl.core.sys\"\n" ..
            "print(\"ready\"); io.stdout:flush()\nprint(sys.wait_signal(30))\n"))
        local codes = {}
        for _, sig in ipairs({"TERM", "INT"}) do
            local p = assert(proc.spawn{ argv = {czctl, "run", script}, stderr = "null" })
            assert(p:read_line(20) == "ready")
            assert(p:kill(sig))
            local got = p:read_line(20)
            codes[#codes + 1] = tostring(got) .. "=" .. tostring(p:wait(20))
            p:close()
        end
        return table.concat(codes, " ") == "SIGTERM=143 SIGINT=130", table.concat(codes, " ")
    ));

    t_remove_tmp(L);
    lua_close(L);
    return t_done();
}
