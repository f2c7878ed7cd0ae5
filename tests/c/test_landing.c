/*
 * test_landing.c: czctl.core.landing: the landing of a direct tunnel forwards
 * admitted connections to a local port, refuses peers outside its allowed
 * networks, resets the cluster side when the app is down, and leaves no
 * thread or fd behind; plus the route lookups that pick its address. All
 * traffic stays on 127.0.0.1 (the app is tests/c/fixtures/http_server.py).
 */
#define _GNU_SOURCE
#include <stdio.h>

#include "harness.h"

/* Threads of this process (from /proc/self/status), or -1. */
static int count_threads(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static int l_threads(lua_State *L)
{
    lua_pushinteger(L, count_threads());
    return 1;
}

int main(void)
{
    lua_State *L = t_state_tmp();   /* proc, sys, tmp */
    lua_register(L, "threads", l_threads);
    t_setup(L, LUA(
        landing = require "czctl.core.landing"
        net = require "czctl.core.net"
        root = os.getenv("CZCTL_ROOT") or "."
        local warm = proc.spawn{ argv = {"true"} }; warm:wait(5); warm:close()
    ));
    int fds_before = t_count_fds("self");
    int threads_before = count_threads();
    t_setup(L, LUA(
        server = assert(proc.spawn{ argv = {"python3", root .. "/tests/c/fixtures/http_server.py"},
                                    stderr = "inherit" })
        app_port = tonumber(assert(server:read_line(20)):match("^READY (%d+)$"))
        function via(l, path, opts)
            local host, port = l:address()
            opts = opts or {}
            opts.url = "http://" .. host .. ":" .. port .. path
            opts.timeout = opts.timeout or 20
            return net.http(opts)
        end
    ));

    t_lua(L, "open listens on a free port of the given address and forwards to the app", LUA(
        local l = assert(landing.open{ host = "127.0.0.1", target_port = app_port, allow = { "127.0.0.0/8" } })
        local host, port = l:address()
        local status, body = via(l, "/echo", { method = "POST", body = "hello",
                                               headers = { ["X-Test"] = "t", ["Content-Type"] = "text/x" } })
        local name = tostring(l)
        l:close()
        return host == "127.0.0.1" and port > 0 and status == 200 and body == "POST t|text/x|hello" and
               name == string.format("landing 127.0.0.1:%d -> 127.0.0.1:%d", port, app_port),
               tostring(status) .. " " .. tostring(body) .. " " .. name
    ));

    t_lua(L, "large bodies pass both ways, byte for byte", LUA(
        local l <close> = assert(landing.open{ host = "127.0.0.1", target_port = app_port, allow = "127.0.0.1" })
        local up = string.rep("0123456789abcdef", 512 * 1024)
        local s1, echoed = via(l, "/echo", { method = "PUT", body = up, headers = { ["Content-Type"] = "a/b" } })
        local s2, big = via(l, "/big")
        return s1 == 200 and echoed == "PUT |a/b|" .. up and s2 == 200 and #big == 5 * 1024 * 1024 and
               not big:find("[^y]"), tostring(s1) .. " " .. tostring(#(echoed or "")) .. " " .. tostring(#(big or ""))
    ));

    t_lua(L, "with tls, only a peer with a client certificate of the session's CA reaches the app", LUA(
        local p = assert(landing.session_pki{ server_name = "127.0.0.1" })
        local other = assert(landing.session_pki{ server_name = "127.0.0.1" })
        local l <close> = assert(landing.open{ host = "127.0.0.1", target_port = app_port, allow = "127.0.0.0/8",
            tls = { cert = p.server_cert, key = p.server_key, client_ca = p.ca_cert } })
        for name, pem in pairs({ ca = p.ca_cert, cert = p.client_cert, key = p.client_key,
                                 ocert = other.client_cert, okey = other.client_key }) do
            assert(sys.write_file(tmp .. "/" .. name .. ".pem", pem, tonumber("600", 8)))
        end
        local _, port = l:address()
        local function curl(...)
            local argv = { "curl", "-s", "--max-time", "10", "-o", tmp .. "/out", "-w", "%{http_code}",
                           "--cacert", tmp .. "/ca.pem", ... }
            argv[#argv + 1] = "https://127.0.0.1:" .. port .. "/echo"
            local c = assert(proc.spawn{ argv = argv, stdout = "pipe", stderr = "null" })
            local code = c:read_line(20)
            c:wait(20); c:close()
            return code
        end
        local ok = curl("--cert", tmp .. "/cert.pem", "--key", tmp .. "/key.pem")
        local foreign = curl("--cert", tmp .. "/ocert.pem", "--key", tmp .. "/okey.pem")
        local none = curl()
        local st = l:stats()
        return ok == "200" and foreign == "000" and none == "000" and st.accepted == 1 and st.untrusted == 2
               and st.tls == true,
               string.format("%s %s %s accepted=%d untrusted=%d", tostring(ok), tostring(foreign), tostring(none),
                             st.accepted, st.untrusted)
    ));

    t_lua(L, "keep-alive requests and half-closes pass through", LUA(
        local l <close> = assert(landing.open{ host = "127.0.0.1", target_port = app_port, allow = "127.0.0.0/8" })
        local host, port = l:address()
        local p = assert(proc.spawn{ argv = {"python3", root .. "/tests/c/fixtures/half_close.py", host,
                                             tostring(port)}, stdout = "pipe" })
        local line = p:read_line(20); p:wait(10); p:close()
        return line == "2", tostring(line)
    ));

    t_lua(L, "a peer outside the allowed networks is reset and counted", LUA(
        local l <close> = assert(landing.open{ host = "127.0.0.1", target_port = app_port, allow = { "10.0.0.0/8" } })
        local status, err = via(l, "/echo", { timeout = 5 })
        local s = l:stats()
        return status == nil and s.refused == 1 and s.accepted == 0, tostring(err) .. " " .. s.refused
    ));

    t_lua(L, "a denied peer is refused even inside an allowed network", LUA(
        local l <close> = assert(landing.open{ host = "127.0.0.1", target_port = app_port, allow = "127.0.0.0/8",
                                               deny = { "127.0.0.1/32" } })
        local status = via(l, "/echo", { timeout = 5 })
        return status == nil and l:stats().refused == 1
    ));

    /* on loopback the reset may even reach the client before its connect() returns */
    t_lua(L, "when the app is down the cluster side is reset without a response", LUA(
        local free = assert(net.free_port())
        local l <close> = assert(landing.open{ host = "127.0.0.1", target_port = free, allow = "127.0.0.0/8" })
        local status, err = via(l, "/", { timeout = 5 })
        local s = l:stats()
        return status == nil and s.failed == 1 and s.accepted == 1, tostring(err)
    ));

    t_lua(L, "close is idempotent, a closed handle says so and refuses use", LUA(
        local l = assert(landing.open{ host = "127.0.0.1", target_port = app_port, allow = "127.0.0.0/8" })
        local host, port = l:address()
        l:close(); l:close()
        local ok = pcall(l.address, l)
        return tostring(l) == "landing (closed)" and not ok and not net.probe(host, port, 1)
    ));

    t_lua(L, "misuse raises: no allow, bad address, bad network, bad port", LUA(
        return not pcall(landing.open, { host = "127.0.0.1", target_port = 1 }) and
               not pcall(landing.open, { host = "localhost", target_port = 1, allow = "127.0.0.0/8" }) and
               not pcall(landing.open, { host = "127.0.0.1", target_port = 1, allow = "127.0.0.0/33" }) and
               not pcall(landing.open, { host = "127.0.0.1", target_port = 0, allow = "127.0.0.0/8" }) and
               not pcall(landing.open, { host = "127.0.0.1", allow = "127.0.0.0/8" }) and
               not pcall(landing.route_source, "nope")
    ));

    t_lua(L, "an address this machine does not have cannot be listened on", LUA(
        local l, err = landing.open{ host = "192.0.2.254", target_port = 1, allow = "192.0.2.0/24" }
        return l == nil and err:find("^bind 192.0.2.254:0: "), tostring(err)
    ));

    t_lua(L, "route_source and interface_of find this machine's address towards a peer", LUA(
        local r = assert(landing.route_source("127.0.0.1"))
        local lo = landing.interface_of("127.0.0.1")
        return r.address == "127.0.0.1" and r.on_link == false and lo and lo.prefix == 8 and
               landing.interface_of("192.0.2.254") == nil,
               tostring(r.address) .. " " .. tostring(r.on_link)
    ));

    t_setup(L, LUA(collectgarbage(); server:close()));
    t_ok(count_threads() == threads_before, "every landing thread has ended", NULL);
    t_remove_tmp(L);
    t_no_fd_leak(fds_before, "no file descriptors leak");
    lua_close(L);
    czctl_curl_cleanup();
    return t_done();
}
