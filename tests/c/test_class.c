/*
 * test_class.c: every handle the C core gives Lua follows one convention
 * (core/class.c, czctl.h "handle classes"), as Lua's own files do: a named
 * metatable with __name, methods under __index apart from the metamethods,
 * one idempotent close behind :close(), __close and __gc, methods on a
 * closed handle refused (or answering as closed), and __tostring saying what
 * the handle is and "<label> (closed)" once closed. Table-driven over
 * process, kube config, kube client, kube watch and landing.
 */
#define _GNU_SOURCE
#include "harness.h"

int main(void)
{
    lua_State *L = t_state_tmp();
    /* the baseline includes the lazily created, process-wide self-pipes */
    t_setup(L, LUA(local warm = proc.spawn{ argv = {"true"} }; warm:wait(5); warm:close()));
    int fds_before = t_count_fds("self");
    t_setup(L, LUA(
        kube = require "czctl.core.kube"
        root = os.getenv("CZCTL_ROOT") or "."
        server = assert(proc.spawn{ argv = {"python3", root .. "/tests/c/fixtures/http_server.py"}, stderr = "null" })
        port = tonumber(assert(server:read_line(20)):match("^READY (%d+)$"))
        local f = assert(io.open(tmp .. "/config", "w"))
        f:write(string.format('{current-context: dev, clusters: [{name: local, cluster: {server: "http://127.0.0.1:%d"}}], '
                              .. 'contexts: [{name: dev, context: {cluster: local}}]}', port))
        f:close()
        function new_config() return assert(kube.load_config{ kubeconfig = tmp .. "/config" }) end
        function new_client() return assert(kube.client(new_config())) end
        classes = {
            { name = "czctl.process", label = "process", methods = {"read_line", "wait", "kill", "pid", "write"},
              open = "^process %d+$", new = function() return assert(proc.spawn{ argv = {"sleep", "30"} }) end,
              use = function(h) return h:read_line(0) end },
            { name = "czctl.kube.config", label = "kube config", methods = {"info"},
              open = '^kube config %(context "dev"%)$', new = new_config,
              use = function(h) return h:info() end },
            { name = "czctl.kube.client", label = "kube client", methods = {"request", "watch", "stats"},
              open = "^kube client %(http://127%.0%.0%.1:%d+%)$", new = new_client,
              use = function(h) return h:request{ path = "/echo" } end },
            { name = "czctl.kube.watch", label = "kube watch", methods = {"next"},
              open = "^kube watch %(%a+%)$",
              new = function() return assert(new_client():watch{ path = "/echo", timeout = 10 }) end,
              use = function(h) return h:next(0) end },
            { name = "czctl.landing", label = "landing", methods = {"address", "stats"},
              open = "^landing 127%.0%.0%.1:%d+ %-> 127%.0%.0%.1:" .. port .. "$",
              new = function()
                  return assert(require("czctl.core.landing").open{ host = "127.0.0.1", target_port = port,
                                                                    allow = "127.0.0.0/8" })
              end,
              use = function(h) return h:stats() end },
        }
    ));
    t_lua(L, "every handle class: __name, methods under __index only, __close, __gc, __tostring", LUA(
        for _, c in ipairs(classes) do
            local h = c.new()
            local mt = getmetatable(h)
            if mt.__name ~= c.name then return false, c.name .. ": __name " .. tostring(mt.__name) end
            if type(mt.__index) ~= "table" or mt.__index.close == nil then return false, c.name .. ": no __index.close" end
            for _, m in ipairs(c.methods) do
                if type(mt.__index[m]) ~= "function" then return false, c.name .. ": no method " .. m end
                if mt[m] ~= nil then return false, c.name .. ": method " .. m .. " in the metatable itself" end
            end
            for _, mm in ipairs{"__gc", "__close", "__tostring"} do
                if type(mt[mm]) ~= "function" then return false, c.name .. ": no " .. mm end
            end
            if mt.__index.__gc ~= nil then return false, c.name .. ": a metamethod among the methods" end
            h:close()
        end
        return true));
    t_lua(L, "__tostring names an open handle, then says it is closed; close is idempotent", LUA(
        for _, c in ipairs(classes) do
            local h = c.new()
            local open = tostring(h)
            if not open:find(c.open) then return false, c.name .. ": " .. open end
            h:close(); h:close()
            local closed = tostring(h)
            if closed ~= c.label .. " (closed)" then return false, c.name .. ": " .. closed end
        end
        return true));
    t_lua(L, "a to-be-closed variable closes the handle when the block ends", LUA(
        for _, c in ipairs(classes) do
            local keep
            do
                local h <close> = c.new()
                keep = h
            end
            if tostring(keep) ~= c.label .. " (closed)" then return false, c.name .. ": " .. tostring(keep) end
        end
        return true));
    t_lua(L, "a closed handle refuses its methods (a watch answers eof)", LUA(
        for _, c in ipairs(classes) do
            local h = c.new()
            h:close()
            local ok, a, b = pcall(c.use, h)
            if c.name == "czctl.kube.watch" then
                if not (ok and a == nil and b == "eof") then return false, c.name .. ": " .. tostring(b) end
            elseif ok then
                return false, c.name .. ": a method worked after close"
            end
        end
        return true));
    t_lua(L, "clients keep working after their config is closed (each holds its own reference)", LUA(
        local cfg = new_config()
        local c = assert(kube.client(cfg))
        cfg:close()
        collectgarbage(); collectgarbage()
        local status, body = c:request{ path = "/echo" }
        c:close()
        return status == 200 and body:find("^GET") ~= nil, tostring(status) .. " " .. tostring(body)));
    t_lua(L, "a handle of one class is refused where another is expected", LUA(
        local p = assert(proc.spawn{ argv = {"true"} })
        local cfg = new_config()
        local ok, err = pcall(kube.client, p)
        p:close(); cfg:close()
        return not ok and tostring(err):find("czctl.kube.config expected, got czctl.process", 1, true) ~= nil, err));
    t_setup(L, LUA(server:close(); server = nil; classes = nil));
    t_remove_tmp(L);
    t_no_fd_leak(fds_before, "no fd left open by the handles");
    t_ok(t_count_zombies() == 0, "no zombie process left", NULL);
    lua_close(L);
    return t_done();
}
