-- session-list: the intercept sessions in the cluster, read from the
-- intercepted Services' annotations (czctl.io/sessions), with each one's
-- owner (yours marked) and state:
--   active         the Service routes through the proxy, which runs
--   drifted        the Service no longer points at the proxy (a `kubectl
--                  apply`, a GitOps sync, a hand edit); its holder re-asserts it
--   proxy missing  the proxy Deployment (or every pod of it) is gone
--   tunnel down    (yours) the tunnel's process stopped; or (anyone's)
--                  nothing accepts on the developer's local port, since
--                  when its holder saw it (the Lease's czctl.io/tunnel-
--                  down-since): requests then go to the in-cluster version
--   holder gone    no process holds the session any more: its heartbeat
--                  Lease czctl-<id> expired (or, yours, no local process)
--   unreadable     the Service's czctl annotations were edited by hand and
--                  cannot be read: one row for the Service, with a warning
--                  saying how to repair it; the other Services' sessions
--                  are listed as usual
-- The namespace as kubectl takes it: -n, else the kubeconfig context's,
-- else default; -A for all. A list never writes anything.
local session = require "czctl.session"
local shared = require "czctl.session.shared"
local output = require "czctl.output"
local signal = require "czctl.signal"
local util = require "czctl.util"
local flags = require "czctl.flags"

return {
  summary = "List intercept sessions",
  usage = "[flags]",
  flags = flags.join({
    { name = "allNamespaces", short = "A", type = "boolean", help = "list the sessions of every namespace" },
  }, flags.kube{ namespace_help = "namespace (default: the kubeconfig context's, else default)" }, flags.output()),
  run = function(ctx)
    local f, out = ctx.flags, ctx.out
    local client = ctx.kube()
    local ns = (not f.allNamespaces) and (f.namespace or client.namespace or "default") or nil
    local scope = { namespace = ns, all_namespaces = ns == nil }
    local found, err = session.discover(client, scope)
    if not found then signal.check(); require("czctl.intercept").raise(err) end
    local server = client:info().server
    local health = {}  -- "ns/service" -> {drift, proxy_missing}
    local function service_health(s)
      local key = s.namespace .. "/" .. s.service
      if health[key] then return health[key] end
      local h = {}
      local drifted, why = shared.drift(s.service_object)
      if drifted then h.drift = why end
      local d = client:get("Deployment", shared.names(s.service).deployment, { namespace = s.namespace })
      if not d then
        h.missing = "the proxy Deployment is gone"
      elseif (d.spec.replicas or 1) == 0 or ((d.status or {}).availableReplicas or 0) == 0 then
        h.missing = "the proxy has no running pod"
      end
      health[key] = h
      return h
    end
    local leases = session.heartbeats(client, scope)
    local sessions = setmetatable({}, util.array_mt)
    local seen = {}
    for _, s in ipairs(found) do
      if s.unreadable then
        out:warn("%s", s.unreadable)
        sessions[#sessions + 1] = { kind = "Session", id = s.id, namespace = s.namespace, service = s.service,
                                    state = "unreadable", stateDetail = s.unreadable, started = s.started }
      elseif not s.orphan then
        local e = s.entry
        local mine = session.load(s.id)
        if mine and not session.same_cluster(mine, server) then mine = nil end
        seen[s.id] = true
        local h = service_health(s)
        local state, detail, down = "active", nil, nil
        if h.drift then
          state, detail = "drifted", h.drift
        elseif h.missing then
          state, detail = "proxy missing", h.missing
        elseif mine and not session.held(mine) then
          state, detail = "holder gone", "no process on this machine holds it"
        elseif mine and session.keeper_problem(mine) then
          state, detail = "tunnel down", session.keeper_problem(mine)
        elseif leases[s.id] and leases[s.id].expired then
          state, detail = "holder gone", "its heartbeat (Lease czctl-" .. s.id .. ") expired"
        else
          down = (leases[s.id] or {}).tunnel_down_since
                 or (mine and (session.tunnel_status(s.id) or {}).down_since) or nil
          if down then
            state, detail = "tunnel down", "nothing accepts on the developer's local port since " .. down
                                           .. "; its requests go to the in-cluster version"
          end
        end
        local tunnel = mine and (session.tunnel_status(s.id) or mine.tunnel) or nil
        sessions[#sessions + 1] = {
          kind = "Session", id = s.id, namespace = s.namespace, service = s.service, port = e.port,
          all = (e.rule or {}).all == true, rule = e.ruleText, owner = e.owner, mine = session.is_mine(e.owner),
          state = state, stateDetail = detail, tunnelDownSince = down, started = e.started, ["local"] = mine ~= nil,
          tunnel = e.tunnel, tunnelUrl = tunnel and tunnel.url or (e.upstream or {}).url,
        }
      end
    end
    -- A local session not (yet) in the cluster: still starting, or held by a
    -- process here (shown); closed elsewhere ones are left for session close.
    for _, mine in ipairs(session.list_local_for(server)) do
      if not seen[mine.id] and (ns == nil or mine.namespace == ns) and mine.state ~= "active"
         and session.held(mine) then
        sessions[#sessions + 1] = { kind = "Session", id = mine.id, namespace = mine.namespace,
                                    service = mine.service, started = mine.started, ["local"] = true,
                                    owner = mine.owner, mine = true, state = "starting", rule = mine.rule }
      end
    end
    out:result({ apiVersion = "czctl.io/v1", kind = "SessionList", items = sessions }, function(r)
      if #r.items == 0 then return "No intercept sessions" .. (ns and (" in namespace " .. ns) or "") .. "." end
      local rows = {}
      for i, s in ipairs(r.items) do
        rows[i] = { s.id, s.namespace, s.service or "?", s.port and tostring(math.tointeger(s.port)) or "-",
                    s.all and "(all)" or s.rule or "-",
                    s.state == "unreadable" and "-" or (shared.owner_text(s.owner) .. (s.mine and " (you)" or "")),
                    (s.state or "?") .. (s.tunnelDownSince and (" since " .. (s.tunnelDownSince:match("T(.*)$")
                                                                                or s.tunnelDownSince)) or ""),
                    session.format_age(session.age_seconds(s.started)) }
      end
      return output.table({ "SESSION", "NAMESPACE", "SERVICE", "PORT", "RULE", "OWNER", "STATE", "AGE" }, rows)
    end)
    return 0
  end,
}
