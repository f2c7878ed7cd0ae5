-- session-close: end intercept sessions and remove everything they changed.
--
-- What to undo is rebuilt from the cluster (the annotation on the
-- intercepted Service, the objects labelled with the session) plus the local
-- session file when there is one (its keeper and tunnel are stopped), so it
-- works after a crash, from another machine, and when run twice.
--
-- Which sessions: SESSION closes that one; --all closes every czctl session
-- in the namespace (-n, default: the context's namespace); with neither, the
-- sessions started on this machine are closed, and when this machine has
-- none, every session found in the namespace.
local session = require "czctl.session"
local intercept = require "czctl.intercept"
local signal = require "czctl.signal"
local kube = require "czctl.kube"

local function fail(err)
  signal.check()
  intercept.raise(err)
end

local function render(r)
  if #r.closed == 0 then return r.message or "No session to close." end
  local lines = {}
  for _, c in ipairs(r.closed) do
    lines[#lines + 1] = string.format("Closed session %s in %s%s", c.session, c.namespace,
                                      c.service and (" (Service " .. c.service .. " restored)") or "")
  end
  return table.concat(lines, "\n")
end

return {
  summary = "Close intercept sessions and restore the Services they changed",
  usage = "[SESSION] [flags]",
  description = [[
Restores each Service exactly as it was (selector, ports, annotations) and
deletes the proxy Deployment, ConfigMap and Service copy, then stops the
local tunnel and keeper. What to undo is read from the cluster, so this
works after a crash, from another machine, and when run twice.
Which sessions: SESSION, that one; --all, every czctl session in the
namespace; neither, the sessions started on this machine, or, when there
are none, every session in the namespace (-n, default the context's).]],
  args = { { name = "session", help = "the session id (see czctl session list)" } },
  flags = {
    { name = "all", short = "a", type = "boolean", help = "close every czctl session in the namespace" },
    { name = "namespace", short = "n", type = "string", help = "namespace (default: the context's)" },
    { name = "kubeconfig", short = "k", type = "string",
      help = "kubeconfig file to use (default: the session's, else $KUBECONFIG)" },
    { name = "context", type = "string", help = "kubeconfig context to use" },
    { name = "quiet", short = "q", type = "boolean", help = "only display errors" },
    { name = "output", short = "o", type = "string", default = "text", help = "output format: text or json" },
  },
  run = function(ctx)
    local f, out = ctx.flags, ctx.out
    if f.output ~= "text" and f.output ~= "json" then return ctx.usage_error("--output must be text or json") end
    local id = ctx.args.session
    if id and f.all then return ctx.usage_error("give a SESSION or --all, not both") end
    if id and not id:find("^[a-z0-9-]+$") then return ctx.usage_error("invalid session id " .. id) end

    -- One client per kubeconfig/context; flags win over what a session file says.
    local clients = {}
    local function client_for(s)
      local kubeconfig = f.kubeconfig or (s and s.kubeconfig) or nil
      local context = f.context or (s and s.context) or nil
      if not s or (kubeconfig == f.kubeconfig and context == f.context) then
        clients.default = clients.default or ctx.kube()
        return clients.default
      end
      local key = tostring(kubeconfig) .. "\0" .. tostring(context)
      if not clients[key] then
        local c, err = kube.connect{ kubeconfig = kubeconfig, context = context }
        if not c then fail(err) end
        clients[key] = c
      end
      return clients[key]
    end

    -- Work out the targets: {id, namespace, service, service_object, local_session, client}.
    local targets = {}
    local function add_cluster_sessions(client, opts, local_session)
      local found, err = session.discover(client, opts)
      if not found then fail(err) end
      for _, s in ipairs(found) do
        targets[#targets + 1] = { id = s.id, namespace = s.namespace, service = s.service,
                                  service_object = s.service_object,
                                  local_session = local_session or session.load(s.id), client = client }
      end
      return #found
    end

    if id then
      local mine = session.load(id)
      local client = client_for(mine)
      local ns = f.namespace or (mine and mine.namespace)
      if mine and (f.namespace == nil or f.namespace == mine.namespace) then
        -- the local file names the Service; the objects' names come from the id
        targets[#targets + 1] = { id = id, namespace = mine.namespace, service = mine.service,
                                  local_session = mine, client = client }
      else
        out:step("Find session " .. id, function()
          add_cluster_sessions(client, { namespace = ns, all_namespaces = ns == nil, id = id }, mine)
        end)
      end
    elseif f.all then
      local client = client_for(nil)
      local ns = f.namespace or client.namespace
      out:step("Find sessions in namespace " .. ns, function()
        add_cluster_sessions(client, { namespace = ns })
      end)
      for _, mine in ipairs(session.list_local()) do
        local known = false
        for _, t in ipairs(targets) do known = known or t.id == mine.id end
        if not known and mine.namespace == ns then
          targets[#targets + 1] = { id = mine.id, namespace = ns, service = mine.service, local_session = mine,
                                    client = client }
        end
      end
    else
      local locals = session.list_local()
      if f.namespace then
        local kept = {}
        for _, s in ipairs(locals) do if s.namespace == f.namespace then kept[#kept + 1] = s end end
        locals = kept
      end
      if #locals > 0 then
        for _, mine in ipairs(locals) do
          targets[#targets + 1] = { id = mine.id, namespace = mine.namespace, service = mine.service,
                                    local_session = mine, client = client_for(mine) }
        end
      else
        local client = client_for(nil)
        local ns = f.namespace or client.namespace
        out:step("Find sessions in namespace " .. ns, function()
          add_cluster_sessions(client, { namespace = ns })
        end)
      end
    end

    local closed, failures = {}, {}
    for _, t in ipairs(targets) do
      local ok, err = pcall(session.close, t.client, t, function(title, fn)
        return out:step(string.format("[%s] %s", t.id, title), fn)
      end)
      if ok then
        closed[#closed + 1] = { session = t.id, namespace = t.namespace, service = t.service }
      else
        signal.check()
        failures[#failures + 1] = string.format("session %s: %s", t.id, tostring(err))
      end
    end
    local message
    if #targets == 0 then
      message = id and string.format("Session %s: nothing left to close.", id) or "No session to close."
    end
    out:result({ closed = closed, failed = failures, message = message }, render)
    if #failures > 0 then
      intercept.raise(table.concat(failures, "; ") .. " (run czctl session close again to retry)")
    end
    return 0
  end,
}
