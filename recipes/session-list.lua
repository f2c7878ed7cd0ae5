-- session-list: the intercept sessions in the cluster (all namespaces, or
-- -n), read from the intercepted Services' annotations and the objects
-- labelled with a session; sessions started on this machine are marked.
-- Sessions whose setup never finished show "-" as PORT and HEADER: close
-- them with `czctl session close ID`. Only local sessions of the cluster
-- being talked to are marked or shown; a local record whose session the
-- cluster no longer knows and no local process holds is not shown (and not
-- removed: a list never writes; `czctl session close` removes it).
-- STATUS is what the session's heartbeat Lease says (czctl.session.heartbeat):
-- ok, tunnel down since when, or stale (its holder is gone).
local session = require "czctl.session"
local heartbeat = require "czctl.session.heartbeat"
local output = require "czctl.output"
local signal = require "czctl.signal"
local util = require "czctl.util"
local flags = require "czctl.flags"

return {
  summary = "List intercept sessions",
  usage = "[flags]",
  flags = flags.join(flags.kube{ namespace_help = "only this namespace (default: all)" }, flags.output()),
  run = function(ctx)
    local f, out = ctx.flags, ctx.out
    local client = ctx.kube()
    local found, err = session.discover(client, { namespace = f.namespace, all_namespaces = f.namespace == nil })
    if not found then signal.check(); require("czctl.intercept").raise(err) end
    local leases = heartbeat.list(client, { namespace = f.namespace, all_namespaces = f.namespace == nil }) or {}
    -- Local session files count only for the cluster being talked to.
    local server = client:info().server
    local sessions = setmetatable({}, util.array_mt)
    local seen = {}
    for _, s in ipairs(found) do
      local record = s.record or {}
      local mine = session.load(s.id)
      if mine and not session.same_cluster(mine, server) then mine = nil end
      seen[s.id] = true
      local tunnel = mine and (session.tunnel_status(s.id) or mine.tunnel) or nil
      sessions[#sessions + 1] = {
        kind = "Session", id = s.id, namespace = s.namespace, service = s.service or (mine and mine.service),
        port = record.port, all = record.all == true, rule = record.rule,
        started = record.started or s.started, ["local"] = mine ~= nil,
        complete = s.record ~= nil, objects = setmetatable(s.objects or {}, util.array_mt),
        tunnel = tunnel and tunnel.provider or record.tunnel, tunnelUrl = tunnel and tunnel.url,
        tunnelStatus = tunnel and tunnel.status,
        holder = heartbeat.state(leases[s.namespace .. "/" .. s.id], record.started or s.started),
      }
    end
    -- A local session with nothing in the cluster: still starting or held by
    -- a process here (shown), or closed elsewhere (left for session close).
    for _, mine in ipairs(session.list_local_for(server)) do
      if not seen[mine.id] and (f.namespace == nil or mine.namespace == f.namespace) and session.held(mine) then
        sessions[#sessions + 1] = { kind = "Session", id = mine.id, namespace = mine.namespace,
                                    service = mine.service, started = mine.started, ["local"] = true,
                                    complete = false, objects = setmetatable({}, util.array_mt) }
      end
    end
    out:result({ apiVersion = "czctl.io/v1", kind = "SessionList", items = sessions }, function(r)
      if #r.items == 0 then return "No intercept sessions." end
      local rows = {}
      for i, s in ipairs(r.items) do
        rows[i] = { s.id, s.namespace, s.service or "?", s.port and tostring(math.tointeger(s.port)) or "-",
                    s.all and "(all)" or s.rule or "-", session.format_age(session.age_seconds(s.started)),
                    s["local"] and "*" or "", s.holder and heartbeat.describe(s.holder) or "starting" }
      end
      return output.table({ "SESSION", "NAMESPACE", "SERVICE", "PORT", "HEADER", "AGE", "LOCAL", "STATUS" }, rows)
    end)
    return 0
  end,
}
