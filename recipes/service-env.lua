-- service-env: the environment of the in-cluster app behind a Service,
-- resolved as the kubelet resolves it (czctl.env), for a process on this
-- machine: printed (Secret values hidden unless --show-secrets), written to
-- a 0600 file (--file), or given to a command (SERVICE -- CMD ARGS...).
-- --mount DIR writes the container's ConfigMap and Secret volumes under DIR.
-- Reads only; changes nothing in the cluster. See docs/env.md.
local env = require "czctl.env"
local access = require "czctl.access"
local flags = require "czctl.flags"
local signal = require "czctl.signal"

local function fail(err)
  signal.check()
  require("czctl.intercept").raise(err)
end

return {
  summary = "Print or use the environment of the app behind a Service",
  usage = "SERVICE [flags] [-- COMMAND [ARGS...]]",
  description = [[
Picks a ready pod behind SERVICE (it says which) and resolves its
container's environment as the kubelet does: env values with $(VAR)
expansion, ConfigMap and Secret references (optional ones may be missing),
fieldRef, resourceFieldRef, envFrom with prefixes. Values from Secrets are
never printed unless --show-secrets; --file writes everything to a file
created with mode 0600; after -- the command runs with that environment
added to this one and czctl exits with its exit code. The dotenv quoting is
read back exactly by `set -a; . FILE` and python-dotenv (docs/env.md).]],
  args = {
    { name = "service", help = "the Service whose pods' environment to use", required = true,
      complete = "services" },
    { name = "command", help = "a command to run with that environment (after --)", variadic = true },
  },
  flags = flags.join({
    { name = "container", short = "c", type = "string",
      help = "the container (default: the pod's only one, its default-container annotation, or the first)" },
    { name = "output", short = "o", type = "string", default = "dotenv", choices = { "dotenv", "json", "yaml" },
      help = "format: dotenv (NAME='value' lines), json or yaml (an Environment document)" },
    { name = "file", type = "string", complete = "files",
      help = "write to this file (created with mode 0600, Secret values included) instead of stdout" },
    { name = "showSecrets", type = "boolean", help = "print Secret values on stdout too" },
    { name = "mount", type = "string", complete = "files",
      help = "also write the container's ConfigMap and Secret volumes under this directory" },
    { name = "quiet", short = "q", type = "boolean", help = "print only errors" },
  }, flags.kube{ namespace_default = "default", namespace_help = "the namespace of the Service" }),
  run = function(ctx)
    local f, out = ctx.flags, ctx.out
    local command = ctx.args.command or {}
    if #command > 0 then
      local dashes = false
      for _, a in ipairs(ctx.invocation.argv) do if a == "--" then dashes = true; break end end
      if not dashes then
        ctx.usage_error("unexpected argument %q; put -- before a command to run: czctl service env %s -- %s",
                        command[1], ctx.args.service, command[1])
      end
    end
    if f.file then
      local ok, perr = env.check_path(f.file)
      if not ok then ctx.usage_error("--file %s", perr) end
    end
    local client = ctx.kube()
    local ok, aerr = access.check(client, f.namespace, access.needs("service env"), "czctl service env",
                                 ctx.args.service)
    if not ok then fail(aerr) end
    local result, err = env.resolve(client, { namespace = f.namespace, service = ctx.args.service,
                                              container = f.container })
    if not result then fail(err) end
    out:info("Environment of pod %s/%s, container %s (%d variables, %d from Secrets)", result.namespace, result.pod,
             result.container, #result.vars, env.count_secrets(result))
    for _, w in ipairs(result.warnings) do out:warn("%s", w) end
    if f.mount then
      local written, merr = require("czctl.env.mount").write(client, result.pod_object, result.container, f.mount)
      if not written then fail(merr) end
      out:info("Wrote %d files of %d volumes under %s", written.files, written.volumes, f.mount)
      if #written.skipped > 0 then
        out:warn("volumes not written (only configMap, secret, downwardAPI and projected volumes are): %s",
                 table.concat(written.skipped, ", "))
      end
    end
    if #command > 0 then return env.run(command, result) end
    local text, skipped, conflicts = env.render(result, f.output, { secrets = f.file ~= nil or f.showSecrets })
    if #skipped > 0 then
      out:warn("left out of the dotenv output (not shell variable names, or a NUL byte): %s",
               table.concat(skipped, ", "))
    end
    if #conflicts > 0 then
      out:warn("python-dotenv reads these differently from a shell (see docs/env.md, \"Quoting\"): %s",
               table.concat(conflicts, ", "))
    end
    if f.file then
      local wrote, werr = env.write_file(f.file, text)
      if not wrote then fail(werr) end
      out:info("Wrote %d variables to %s (mode 0600)", #result.vars - #skipped, f.file)
      return 0
    end
    if ctx.flags.quiet then return 0 end
    io.stdout:write(text)
    io.stdout:flush()
    return 0
  end,
}
