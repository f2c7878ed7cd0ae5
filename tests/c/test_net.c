/*
 * test_net.c: czctl.core.net: TCP probes, free ports and HTTP(S) requests
 * against a local Python server (tests/c/fixtures/http_server.py). All
 * traffic stays on 127.0.0.1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* A listening socket on 127.0.0.1 with the given backlog; its port in *port. */
static int listen_local(int backlog, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, backlog) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        puts("Bail out! cannot listen on 127.0.0.1");
        exit(1);
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

int main(void)
{
    lua_State *L = t_state_tmp();   /* proc, sys, tmp */
    t_setup(L, LUA(
        net = require "czctl.core.net"
        root = os.getenv("CZCTL_ROOT") or "."
        function start_server(...)
            local p = assert(proc.spawn{ argv = {"python3", root .. "/tests/c/fixtures/http_server.py", ...},
                                         stderr = "inherit" })
            local line = assert(p:read_line(20))
            return p, tonumber(line:match("^READY (%d+)$"))
        end
        local warm = proc.spawn{ argv = {"true"} }; warm:wait(5); warm:close()
    ));
    int fds_before = t_count_fds("self");
    t_setup(L, LUA(server, port = start_server(); base = "http://127.0.0.1:" .. port));

    int lport;
    int lfd = listen_local(16, &lport);
    lua_pushinteger(L, lport);
    lua_setglobal(L, "listening_port");
    t_lua(L, "probe succeeds against a listening port and fails fast on a closed one", LUA(
        local ok = net.probe("127.0.0.1", listening_port, 2)
        local free = assert(net.free_port())
        local t0 = sys.now()
        local no, err = net.probe("127.0.0.1", free, 2)
        return ok == true and no == nil and err:find("Connection refused") and sys.now() - t0 < 1,
               tostring(err)
    ));
    close(lfd);

    t_lua(L, "probe resolves host names (localhost)", LUA(
        return net.probe("localhost", port, 2) == true
    ));

    t_lua(L, "free_port returns a port that can be listened on", LUA(
        local p1 = net.free_port("127.0.0.1")
        local p2 = net.free_port()
        local bad, err = net.free_port("256.1.1.1")
        return math.type(p1) == "integer" and p1 > 0 and p1 < 65536 and p2 > 0 and bad == nil and err,
               tostring(err)
    ));

    t_lua(L, "misuse raises: control characters in method, url or headers", LUA(
        return not pcall(net.http, { url = base, method = "GET / HTTP/1.1\r\nX: y" }) and
               not pcall(net.http, { url = base .. "/\r\nX: y" }) and
               not pcall(net.http, { url = base, headers = { ["X-A\r\nX-B"] = "1" } }) and
               not pcall(net.http, { url = base, headers = { ["X-A"] = "1\r\nX-B: 2" } }) and
               not pcall(net.http, { url = base, timeout = -1 }) and
               not pcall(net.http, { url = base, timeout = "soon" })
    ));

    t_lua(L, "misuse raises: bad port, missing url, headers of the wrong type", LUA(
        return not pcall(net.probe, "127.0.0.1", 0) and not pcall(net.probe, "127.0.0.1", 70000) and
               not pcall(net.http, {}) and not pcall(net.http, { url = base, headers = "x" }) and
               not pcall(net.http, { url = base, headers = { X = {} } }) and
               not pcall(net.http, { url = base, body = {} }) and not pcall(net.http, "x")
    ));

    t_lua(L, "http sends method, headers and body and returns status, body, lowercased headers", LUA(
        local status, body, headers = net.http{ method = "POST", url = base .. "/echo",
            headers = { ["X-Test"] = "yes", ["Content-Type"] = "application/json" },
            body = "{\"a\":1}", timeout = 10 }
        return status == 200 and body == "POST yes|application/json|{\"a\":1}" and
               headers["content-type"] == "text/plain" and headers["x-multi"] == "one, two" and
               headers["content-length"] == tostring(#body),
               tostring(status) .. " " .. tostring(body) .. " " .. tostring(headers and headers["x-multi"])
    ));

    t_lua(L, "http returns 4xx answers as a status, not as an error", LUA(
        local status, body = net.http{ url = base .. "/missing" }
        local hs, hb, hh = net.http{ method = "HEAD", url = base .. "/echo" }
        return status == 404 and body == "not found" and hs == 200 and hb == "" and hh["content-length"],
               tostring(status)
    ));

    /* a proxy that does not exist: using it would fail the request */
    setenv("http_proxy", "http://127.0.0.1:9", 1);
    setenv("HTTP_PROXY", "http://127.0.0.1:9", 1);
    t_lua(L, "http to a loopback address ignores http_proxy", LUA(
        local status, body = net.http{ url = base .. "/echo", timeout = 10 }
        return status == 200 and body:find("^GET"), tostring(status) .. " " .. tostring(body)
    ));
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");

    t_lua(L, "http reads a 5 MiB body whole", LUA(
        local status, body = net.http{ url = base .. "/big", timeout = 30 }
        return status == 200 and #body == 5 * 1024 * 1024 and not body:find("[^y]"), tostring(#body)
    ));

    t_lua(L, "http failures return nil and a message: refused, timeout, unsupported scheme", LUA(
        local free = assert(net.free_port())
        local a, ea = net.http{ url = "http://127.0.0.1:" .. free .. "/" }
        local t0 = sys.now()
        local b, eb = net.http{ url = base .. "/slow", timeout = 0.3 }
        local dt = sys.now() - t0
        local c, ec = net.http{ url = "file:///etc/passwd" }
        return a == nil and ea:find("127.0.0.1") and b == nil and eb:find("timed out") and dt < 3 and
               c == nil and ec:find("[Pp]rotocol"),
               string.format("%s | %s | %s", tostring(ea), tostring(eb), tostring(ec))
    ));

    t_lua(L, "a signal interrupts a slow request", LUA(
        local k = assert(proc.spawn{ argv = {"sh", "-c", "sleep 0.3; kill -TERM " .. sys.getpid()} })
        local t0 = sys.now()
        local r, why = net.http{ url = base .. "/slow", timeout = 20 }
        local dt = sys.now() - t0
        local sig = sys.pending_signal()
        sys.clear_signal(); k:wait(5); k:close()
        return r == nil and why == "interrupted" and sig == "SIGTERM" and dt < 3,
               tostring(why) .. " after " .. dt
    ));

    t_lua(L, "https verifies certificates unless insecure is set", LUA(
        local cert, key = tmp .. "/cert.pem", tmp .. "/key.pem"
        assert(os.execute("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 " ..
                          "-days 1 -keyout " .. key .. " -out " .. cert .. " 2>/dev/null"))
        local tls, tls_port = start_server(cert, key)
        local url = "https://127.0.0.1:" .. tls_port .. "/echo"
        local refused, err = net.http{ url = url, timeout = 10 }
        local status, body = net.http{ url = url, timeout = 10, insecure = true }
        tls:close()
        return refused == nil and err:find("certificate") and status == 200 and body:find("^GET"),
               tostring(err) .. " / " .. tostring(status)
    ));

    t_setup(L, LUA(server:close()));
    t_remove_tmp(L);
    t_no_fd_leak(fds_before, "no file descriptors leak");
    lua_close(L);
    czctl_curl_cleanup();
    return t_done();
}
