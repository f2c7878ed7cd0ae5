-- session-list: the intercept sessions in the cluster, read from the
-- intercepted Services' annotations (czctl.io/sessions), with each one's
-- owner (yours marked) and state:
--   active         the Service routes through the proxy, which runs
--   drifted        the Service no longer points at the proxy (a `kubectl
--                  apply`, a GitOps sync, a hand edit); its holder re-asserts it
--   proxy missing  the proxy Deployment (or every pod of it) is gone
--   tunnel down    (yours) the tunnel's process stopped, or the kube
--                  tunnel's streams do not reach its relay; or (anyone's)
--                  nothing accepts on the developer's local port, since
--                  when its holder saw it (the Lease's czctl.io/tunnel-
--                  down-since): requests then go to the in-cluster version
--   holder gone    no process holds the session any more: its heartbeat
--                  Lease czctl-<id> expired (or, yours, no local process)
--   orphaned       the session is on no Service, but its tunnel's objects
--                  are still in the cluster (the kube tunnel's relay, left
--                  by a close that died half-way) and no live session holds
--                  them (czctl.session.cluster.tunnel_left): `session close
--                  --stale` removes them
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

-- The state of a tunnel that reports one (kube: its pool of streams is up,
-- connecting, down or failed; stopped once no process of this machine holds
-- it), or nil.
local function tunnel_state(mine)
  local t = session.tunnel_status(mine.id)
  if not (t and t.state) then return nil end
  return session.keeper_problem(mine) and "stopped" or t.state
end

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
        local ts = mine and tunnel_state(mine) or nil
        local state, detail, down = "active", nil, nil
        if h.drift then
          state, detail = "drifted", h.drift
        elseif h.missing then
          state, detail = "proxy missing", h.missing
        elseif mine and not session.held(mine) then
          state, detail = "holder gone", "no process on this machine holds it"
        elseif mine and session.keeper_problem(mine) then
          state, detail = "tunnel down", session.keeper_problem(mine)
        elseif ts and ts ~= "up" then
          state, detail = "tunnel down", string.format("%s tunnel %s: %s", tostring(e.tunnel), ts,
                                                       tostring(session.tunnel_status(s.id).error or "-"))
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
          tunnelState = ts,
        }
      end
    end
    -- What tunnels left in the cluster (a relay) for no live session.
    local left, lerr = session.left_tunnels(client, scope, { server = server, sessions = found, beats = leases })
    if not left then signal.check(); require("czctl.intercept").raise(lerr) end
    for _, t in ipairs(left) do
      seen[t.id] = true
      sessions[#sessions + 1] = {
        kind = "Session", id = t.id, namespace = t.namespace, service = t.service, started = t.created,
        ["local"] = t.local_session ~= nil, mine = t.local_session ~= nil, tunnel = t.tunnel, state = "orphaned",
        owner = t.local_session and t.local_session.owner or nil,
        stateDetail = string.format("%s (%s) belongs to no live session; remove it with: czctl session close "
                                    .. "--stale -n %s", t.name, table.concat(t.objects, ", "), t.namespace),
      }
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
      local text = output.table({ "SESSION", "NAMESPACE", "SERVICE", "PORT", "RULE", "OWNER", "STATE", "AGE" }, rows)
      for _, s in ipairs(r.items) do
        if s.state == "orphaned" then text = text .. s.id .. ": " .. s.stateDetail .. "\n" end
      end
      return text
    end)
    return 0
  end,
}
