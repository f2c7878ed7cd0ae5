/*
 * test_embed.c: the Lua sources compiled into the binary: every module and
 * recipe is there under its path-derived name, compiles, and reports errors
 * with its file name; nothing is loaded before it is required.
 */
#define _GNU_SOURCE
#include <stdio.h>

#include "harness.h"

int main(void)
{
    lua_State *L = t_state();
    t_setup(L, LUA(embed = require "czctl.core.embed"));

    t_lua(L, "every lua/ file is a module named after its path, sorted", LUA(
        local want = {}
        for path in io.popen("cd \"${CZCTL_ROOT:-.}\" && find lua -name \"*.lua\""):lines() do
            local name = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
            want[#want + 1] = name
        end
        table.sort(want)
        local got = embed.modules()
        return #got > 0 and table.concat(got, " ") == table.concat(want, " "),
               table.concat(got, " ") .. " vs " .. table.concat(want, " ")
    ));

    t_lua(L, "every recipes/ file is a recipe named after its file", LUA(
        local want = {}
        for path in io.popen("cd \"${CZCTL_ROOT:-.}\" && ls recipes/*.lua"):lines() do
            want[#want + 1] = path:match("^recipes/(.*)%.lua$")
        end
        table.sort(want)
        return table.concat(embed.recipes(), " ") == table.concat(want, " ")
    ));

    t_lua(L, "embedded sources are byte-identical to the files", LUA(
        local root = os.getenv("CZCTL_ROOT") or "."
        for _, name in ipairs(embed.recipes()) do
            local src, chunk = embed.recipe_source(name)
            local f = assert(io.open(root .. "/recipes/" .. name .. ".lua", "rb"))
            local disk = f:read("a"); f:close()
            if src ~= disk or chunk ~= "@recipes/" .. name .. ".lua" then
                return false, "recipes/" .. name .. ".lua differs from the built-in copy (stale build? run make)"
            end
        end
        local src, chunk = embed.module_source("czctl.cli")
        local f = assert(io.open(root .. "/lua/czctl/cli/init.lua", "rb"))
        local disk = f:read("a"); f:close()
        return src == disk and chunk == "@czctl/cli/init.lua",
               "lua/czctl/cli/init.lua differs from the built-in copy (stale build? run make)"
    ));

    t_lua(L, "every embedded module and recipe compiles", LUA(
        local bad = {}
        for _, name in ipairs(embed.modules()) do
            local ok, err = load(embed.module_source(name))
            if not ok then bad[#bad + 1] = err end
        end
        for _, name in ipairs(embed.recipes()) do
            local ok, err = load(embed.recipe_source(name))
            if not ok then bad[#bad + 1] = err end
        end
        return #bad == 0, table.concat(bad, "; ")
    ));

    t_lua(L, "modules are preloaded, not loaded, until required", LUA(
        for _, name in ipairs(embed.modules()) do
            if type(package.preload[name]) ~= "function" then return false, "no loader: " .. name end
            if package.loaded[name] ~= nil then return false, "loaded early: " .. name end
        end
        for _, name in ipairs({"czctl.core.proc", "czctl.core.sys", "czctl.core.net",
                               "czctl.core.kube", "czctl.core.embed", "cjson"}) do
            if type(package.preload[name]) ~= "function" then return false, "no loader: " .. name end
        end
        return type(require("czctl.util")) == "table" and require("cjson").encode({1}) == "[1]"
    ));

    t_lua(L, "unknown names give nil and a message", LUA(
        local a, ea = embed.module_source("czctl.nope")
        local b, eb = embed.recipe_source("nope")
        return a == nil and ea == "no built-in module named 'czctl.nope'" and b == nil and
               eb == "no built-in recipe named 'nope'" and not pcall(embed.recipe_source)
    ));

    t_lua(L, "version is a non-empty string", LUA(
        return type(embed.version) == "string" and embed.version:match("^%d+%.%d+")
    ));

    lua_close(L);
    return t_done();
}
