-- session-list: the intercept sessions in the cluster (all namespaces, or
-- -n), read from the intercepted Services' annotations and the objects
-- labelled with a session; sessions started on this machine are marked.
-- Sessions whose setup never finished show "-" as PORT and HEADER: close
-- them with `czctl session close ID`.
local session = require "czctl.session"
local output = require "czctl.output"
local signal = require "czctl.signal"

return {
  summary = "List intercept sessions",
  usage = "[flags]",
  flags = {
    { name = "namespace", short = "n", type = "string", help = "only this namespace (default: all)" },
    { name = "kubeconfig", short = "k", type = "string", help = "kubeconfig file to use" },
    { name = "context", type = "string", help = "kubeconfig context to use" },
    { name = "quiet", short = "q", type = "boolean", help = "only display errors" },
    { name = "output", short = "o", type = "string", default = "text", help = "output format: text or json" },
  },
  run = function(ctx)
    local f, out = ctx.flags, ctx.out
    if f.output ~= "text" and f.output ~= "json" then return ctx.usage_error("--output must be text or json") end
    local client = ctx.kube()
    local found, err = session.discover(client, { namespace = f.namespace, all_namespaces = f.namespace == nil })
    if not found then signal.check(); require("czctl.intercept").raise(err) end
    local sessions = {}
    local seen = {}
    for _, s in ipairs(found) do
      local record = s.record or {}
      local mine = session.load(s.id)
      seen[s.id] = true
      local tunnel = mine and (session.tunnel_status(s.id) or mine.tunnel) or nil
      sessions[#sessions + 1] = {
        session = s.id, namespace = s.namespace, service = s.service or (mine and mine.service),
        port = record.port, header = record.all and "(all)" or record.header or record.rule, rule = record.rule,
        started = record.started or s.started, ["local"] = mine ~= nil,
        complete = s.record ~= nil, objects = s.objects,
        tunnel_url = tunnel and tunnel.url, tunnel_status = tunnel and tunnel.status,
      }
    end
    for _, mine in ipairs(session.list_local()) do
      if not seen[mine.id] and (f.namespace == nil or mine.namespace == f.namespace) then
        sessions[#sessions + 1] = { session = mine.id, namespace = mine.namespace, service = mine.service,
                                    port = nil, header = nil, started = mine.started, ["local"] = true,
                                    complete = false, objects = {} }
      end
    end
    out:result({ sessions = sessions }, function(r)
      if #r.sessions == 0 then return "No intercept sessions." end
      local rows = {}
      for i, s in ipairs(r.sessions) do
        rows[i] = { s.session, s.namespace, s.service or "?", s.port and tostring(math.tointeger(s.port)) or "-",
                    s.header or "-", session.format_age(session.age_seconds(s.started)),
                    s["local"] and "*" or "" }
      end
      return output.table({ "SESSION", "NAMESPACE", "SERVICE", "PORT", "HEADER", "AGE", "LOCAL" }, rows)
    end)
    return 0
  end,
}
