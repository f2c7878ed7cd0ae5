-- czctl.session.guard: what a session's holder does for the cluster while
-- the session lives (docs/decisions.md, section 4). It renews the session's
-- heartbeat Lease (czctl-<id>) and watches the intercepted Service's
-- Endpoints, which change whenever the Service's selector or target ports
-- change or the proxy's pods come and go; on each change (and at each
-- renewal, for edits that move no endpoint) it reads the Service and the
-- proxy Deployment and
--   * re-asserts the route when a `kubectl apply`, a GitOps sync or a hand
--     edit undid it (a guarded patch, and a warning naming what it saw);
--     after FIGHT_LIMIT re-assertions within FIGHT_WINDOW seconds it stops
--     fighting: restores the Service and ends its sessions;
--   * restores the Service and ends its sessions when the proxy Deployment
--     is gone (deleted, being deleted, scaled to zero);
--   * repairs the proxy when its configuration is older than the Service's
--     routes-version (a writer died between the two), by the same
--     reconciliation every join and leave runs.
-- It runs in `czctl session keep ID --guard`, a child of the keeper: the
-- keeper itself never loads the Kubernetes client. Messages go to `log`.
local intercept = require "czctl.intercept"
local shared = require "czctl.session.shared"
local signal = require "czctl.signal"
local sys = require "czctl.sys"

local M = {}

M.LEASE_SECONDS = 30     -- a heartbeat older than this: the holder is gone
M.RENEW_SECONDS = 10
M.KEEPER_CHECK_SECONDS = 5 -- the longest a guard outlives a keeper killed by SIGKILL
M.RETRY_SECONDS = 1      -- after a failed watch (the cluster cannot be reached)
M.FIGHT_LIMIT = 3
M.FIGHT_WINDOW = 60
M.ENDED_REASON = "InterceptEnded"  -- the Event a holder leaves when it ends a Service's sessions
M.REASSERTED_REASON = "InterceptReasserted"  -- ... when it routes the Service through the proxy again
M.CLOSED_ELSEWHERE = "the Service no longer carries this session (closed elsewhere)"
-- The longest a holder keeps its tunnel for the proxy pods that still route
-- to its session after it left (their grace period, and some slack).
M.DRAIN_SECONDS = shared.GRACE_SECONDS + 15
M.DRAIN_POLL_SECONDS = 0.5 -- (a pod list each time, from every holder that drains)
-- After a change is seen, the next look comes this soon: another holder's
-- Event follows its patch by one request.
M.RECHECK_SECONDS = 1

-- A Warning Event on the Service, as the holder's message to every other
-- holder (and to `kubectl describe`). Returns the Event, or nil.
local function tell(client, namespace, name, reason, message)
  local now = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(sys.time()))
  return client:create({
    apiVersion = "v1", kind = "Event", type = "Warning", reason = reason, message = message,
    metadata = { generateName = name .. ".czctl-", namespace = namespace },
    involvedObject = { apiVersion = "v1", kind = "Service", name = name, namespace = namespace },
    source = { component = "czctl" }, firstTimestamp = now, lastTimestamp = now, count = 1,
  }, { namespace = namespace })
end

-- The age (seconds) of an Event stamped at `since` (epoch seconds) or
-- later: Events have whole seconds; the ages compared with it are taken a
-- moment later (half a second of slack).
local function max_age(since)
  return since and (sys.time() - math.floor(since) + 0.5) or nil
end

-- The czctl Events on a Service (reason in `reasons`) this guard has not
-- seen yet, of those since `since` (the session's start, epoch seconds;
-- Events have whole seconds): what happened before the session is no news
-- to it, what happened before its guard started (a revert right after the
-- join) is.
local function unseen_events(client, namespace, name, st, reasons, since)
  local list = client:list("Event", { namespace = namespace, fieldSelector = "involvedObject.name=" .. name })
  local fresh = {}
  local limit = max_age(since) or 0
  for _, e in ipairs(list and list.items or {}) do
    local key = e.metadata and e.metadata.name
    if key and reasons[e.reason] and (e.involvedObject or {}).name == name and not st.seen[key] then
      st.seen[key] = true
      local age = require("czctl.session.records").age_seconds(e.lastTimestamp)
      if age and age <= limit then fresh[#fresh + 1] = e end
    end
  end
  return fresh
end

-- Why the sessions of a Service were ended by a holder in the last minute
-- and since `since` (epoch seconds; Events have whole seconds), if they
-- were: its InterceptEnded Event's message, or nil.
local function recent_end(client, namespace, name, since)
  local list = client:list("Event", { namespace = namespace, fieldSelector = "involvedObject.name=" .. name })
  local best, best_age
  local limit = math.min(60, max_age(since) or 60)
  for _, e in ipairs(list and list.items or {}) do
    local age = require("czctl.session.records").age_seconds(e.lastTimestamp)
    if e.reason == M.ENDED_REASON and (e.involvedObject or {}).name == name and age and age <= limit
       and (not best_age or age < best_age) then
      best, best_age = e.message, age
    end
  end
  return best
end

--- The heartbeat Lease of a session.
---@param s table the local session record
---@return table
function M.lease(s)
  local labels = shared.labels(s.service)
  labels[intercept.MANAGED_BY] = "czctl"
  return {
    apiVersion = "coordination.k8s.io/v1", kind = "Lease",
    metadata = { name = "czctl-" .. s.id, namespace = s.namespace, labels = labels },
    spec = { holderIdentity = s.id, leaseDurationSeconds = M.LEASE_SECONDS, renewTime = M.micro_time() },
  }
end

--- Now as a Kubernetes MicroTime (RFC 3339 with microseconds, UTC).
---@return string
function M.micro_time()
  local t = sys.time()
  local whole = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", whole) .. string.format(".%06dZ", math.floor((t - whole) * 1e6))
end

M.TUNNEL_DOWN = "czctl.io/tunnel-down-since"  -- on the Lease: since when nothing accepts on the local port

--- Renew the session's heartbeat Lease, with since when the tunnel is down
--- (the keeper's .tunnel.json), or without; create it when `create` (the
--- guard's first renewal). Later, a missing Lease was deleted by a
--- `session close`: creating it again would leave it behind the close.
--- A close can also come between the guard's start and the creation: so,
--- once created, the Lease is deleted again if the session is no longer on
--- its Service (a close takes it off the Service before it deletes Leases);
--- signals wait for that (the close stops this guard right after).
---@param client table
---@param s table
---@param create? boolean
---@return boolean|nil ok
---@return any err
function M.renew(client, s, create)
  local kube = require "czctl.kube"
  local name = "czctl-" .. s.id
  local down = (require("czctl.session.keeper").tunnel_status(s.id) or {}).down_since
  local patch = { metadata = { annotations = { [M.TUNNEL_DOWN] = down or require("cjson").null } },
                  spec = { renewTime = M.micro_time() } }
  local patched, err = client:patch("Lease", name, patch, { namespace = s.namespace, type = "merge" })
  if patched then return true end
  if not kube.not_found(err) or not create then return nil, err end
  local _ <close> = sys.shield()
  local lease = M.lease(s)
  if down then lease.metadata.annotations = { [M.TUNNEL_DOWN] = down } end
  local created, cerr = client:create(lease, { namespace = s.namespace })
  if not (created or kube.already_exists(cerr)) then return nil, cerr end
  local svc, gerr = client:get("Service", s.service, { namespace = s.namespace })
  local ok, state = pcall(shared.state, svc or {})
  if (svc and ok and not shared.find(state, s.id)) or (not svc and kube.not_found(gerr)) then
    client:delete("Lease", name, { namespace = s.namespace })
    return nil, "the session is no longer on Service " .. s.service
  end
  return true
end

--- End every session of a Service: one guarded patch restores what czctl
--- changed (keeping others' edits) and removes czctl's annotations; then
--- the proxy is deleted.
--- The reason is recorded as a Warning Event on the Service (reason
--- InterceptEnded), so the other sessions' holders, and `kubectl describe`,
--- can tell why.
---@param client table
---@param namespace string
---@param name string
---@param reason string
---@return string[] warnings
function M.end_all(client, namespace, name, reason)
  local warnings = {}
  tell(client, namespace, name, M.ENDED_REASON, reason)
  local _, err = intercept.guarded_patch(client, namespace, name, nil, function(current)
    if not shared.touched(current) and not shared.state(current).redirected then return nil, "nothing to restore" end
    local patch
    patch, warnings = shared.restore_patch(current)
    return patch
  end)
  local kube = require "czctl.kube"
  if err and not kube.not_found(err) then intercept.raise(err) end
  shared.delete_proxy(client, namespace, name)
  return warnings
end

local function deployment_version(d)
  local a = d and d.metadata and d.metadata.annotations
  return type(a) == "table" and math.tointeger(tonumber(a[shared.VERSION])) or 0
end

--- One look at the session's Service and proxy, acting on what is wrong.
--- Returns nil while the session goes on, or "closed" (no longer on the
--- Service: closed elsewhere, or ended by another holder) / "ended" (this
--- guard ended it), with a message and the czctl state of the Service
--- then (nil when it is gone).
---@param client table
---@param s table the local session record
---@param st table this guard's memory {fights = {times}, stale_version?}
---@param log fun(fmt: string, ...)
---@return string|nil outcome
---@return string|nil message
---@return czctl.session.SharedState|nil state
function M.check(client, s, st, log)
  local kube = require "czctl.kube"
  local ns, name = s.namespace, s.service
  local function gone(err)
    if not kube.not_found(err) then log("warning: cannot read Service %s: %s", name, tostring(err)); return nil end
    shared.delete_proxy(client, ns, name)
    return "ended", string.format("Service %s/%s was deleted", ns, name)
  end
  local svc, err = client:get("Service", name, { namespace = ns })
  if not svc then return gone(err) end
  -- A warning told once, whichever holder saw it first (the same drift
  -- gives every holder the same message).
  local function say(message)
    local now = sys.now()
    if st.told[message] and now - st.told[message] < M.FIGHT_WINDOW then return end
    st.told[message] = now
    log("warning: %s", message)
  end
  -- what other holders did to this Service (re-assertions), told here too
  for _, e in ipairs(unseen_events(client, ns, name, st, { [M.REASSERTED_REASON] = true },
                                   tonumber(s.started))) do
    say(tostring(e.message))
  end
  local function closed(state)
    -- No session left and the Service its own again (a `kubectl replace`
    -- of the manifest drops czctl's annotations too): the proxy goes.
    if #state.sessions == 0 and not state.redirected then shared.delete_proxy(client, ns, name) end
    return "closed", recent_end(client, ns, name, tonumber(s.started)) or M.CLOSED_ELSEWHERE, state
  end
  local state = shared.state(svc)
  if not shared.find(state, s.id) then return closed(state) end
  local d, derr = client:get("Deployment", shared.names(name).deployment, { namespace = ns })
  local missing
  if not d then
    if not kube.not_found(derr) then log("warning: cannot read the proxy: %s", tostring(derr)); return nil end
    missing = "the proxy Deployment " .. shared.names(name).deployment .. " was deleted"
  elseif type(d.metadata.deletionTimestamp) == "string" then
    missing = "the proxy Deployment " .. shared.names(name).deployment .. " is being deleted"
  elseif d.spec.replicas == 0 then
    missing = "the proxy Deployment " .. shared.names(name).deployment .. " was scaled to 0"
  end
  if missing then
    -- Another holder that ended the Service's sessions restored it before
    -- deleting the proxy: read after the proxy, the Service says so (and
    -- that holder's Event says why), unless the proxy went some other way.
    svc, err = client:get("Service", name, { namespace = ns })
    if not svc then return gone(err) end
    state = shared.state(svc)
    if not shared.find(state, s.id) then return closed(state) end
    local why = missing .. "; Service " .. name .. " was restored and its sessions ended"
    log("warning: %s; restoring Service %s and ending its sessions", missing, name)
    for _, w in ipairs(M.end_all(client, ns, name, why)) do log("warning: %s", w) end
    return "ended", why, nil
  end
  local drifted, why = shared.drift(svc)
  if drifted then
    local now = sys.now()
    local recent = {}
    for _, t in ipairs(st.fights) do if now - t < M.FIGHT_WINDOW then recent[#recent + 1] = t end end
    st.fights = recent
    if #recent >= M.FIGHT_LIMIT then
      local kept = string.format("a controller keeps reverting Service %s (%d times within %ds, last: %s)",
                                 name, #recent + 1, M.FIGHT_WINDOW, why)
      -- told before the restore: deleting the proxy waits for its pods to drain
      log("warning: %s; giving up: restoring it and ending its sessions", kept)
      local reason = kept .. "; czctl restored it and ended its sessions"
      for _, w in ipairs(M.end_all(client, ns, name, reason)) do log("warning: %s", w) end
      return "ended", reason, nil
    end
    -- every revert seen counts, whichever holder re-asserts first
    st.fights[#st.fights + 1] = now
    -- A revert soon after this re-assertion may leave the Endpoints as they
    -- are now (the endpoints controller coalesces the two changes): no event
    -- would wake this guard, so it looks again soon.
    st.recheck = true
    local patched, perr, untouched = shared.redirect(client, ns, name, svc)
    local message = string.format("Service %s was changed: %s (a kubectl apply, a GitOps sync or a hand edit?); "
                                  .. "czctl routed it through the proxy again", name, why)
    if patched and not untouched then
      local event = tell(client, ns, name, M.REASSERTED_REASON, message)
      if event then st.seen[event.metadata.name] = true end
    end
    if patched then
      say(message) -- (when another holder was first, it did the same)
    else
      log("warning: cannot re-assert the route of Service %s: %s", name, tostring(perr))
    end
    return nil
  end
  -- A writer that died between its join/leave and the proxy update: the
  -- proxy's routes-version stays behind the Service's. Repaired when seen
  -- twice in a row (once is normal: a join in progress).
  if deployment_version(d) < state.version then
    if st.stale_version == state.version then
      local r, rerr = shared.reconcile(client, ns, name, { image = intercept.DEFAULT_IMAGE })
      if r then
        log("repaired the proxy of Service %s: routes version %d", name, state.version)
      else
        log("warning: cannot repair the proxy of Service %s: %s", name, tostring(rerr))
      end
      st.stale_version = nil
    else
      st.stale_version = state.version
    end
  else
    st.stale_version = nil
  end
  return nil
end

--- Guard a session until it is closed or must end, or a signal comes.
--- Returns "signal", "closed" or "ended", and a message.
---@param client table
---@param s table the local session record
---@param log fun(fmt: string, ...)
---@return string outcome
---@return string|nil message
function M.run(client, s, log)
  local st = { fights = {}, seen = {}, told = {} }
  local next_renewal = 0
  local lease_made = false
  local rv, recheck
  local keeper = require "czctl.session.keeper"
  while true do
    if signal.pending() then return "signal" end
    -- the keeper that started this guard is gone (even by SIGKILL): so is the session's holder
    if s.keeper_pid and not keeper.same_process(s.keeper_pid, s.keeper_start) then return "signal" end
    if sys.now() >= next_renewal then
      local ok, err = M.renew(client, s, not lease_made)
      lease_made = lease_made or ok == true
      if not ok and not require("czctl.kube").not_found(err) then
        log("warning: cannot renew the heartbeat Lease czctl-%s: %s", s.id, tostring(err))
      end
      next_renewal = sys.now() + M.RENEW_SECONDS
    end
    local outcome, message, state = M.check(client, s, st, log)
    if outcome then
      if signal.pending() then return "signal" end
      M.drain(client, s, state, message, log)
      return outcome, message
    end
    -- Until the next change of the Service's Endpoints, or the next renewal;
    -- once more soon after a change (another holder's Event follows it) or
    -- a re-assertion.
    local changed, soon = false, recheck or st.recheck
    st.recheck = nil
    local _, werr = client:watch("Endpoints", {
      namespace = s.namespace, fieldSelector = "metadata.name=" .. s.service, resourceVersion = rv,
      timeout = math.max(0.5, math.min(soon and M.RECHECK_SECONDS or M.KEEPER_CHECK_SECONDS,
                                       next_renewal - sys.now())), relist = true,
    }, function(_, obj)
      if type(obj) == "table" and type(obj.metadata) == "table" then rv = obj.metadata.resourceVersion end
      changed = true
      return true
    end)
    recheck = changed
    if werr and require("czctl.kube").interrupted(werr) then return "signal" end
    -- the cluster cannot be reached (the laptop's network is gone): look again after
    -- a pause, not at once (hundreds of requests and warnings a second otherwise)
    if werr and not require("czctl.kube").timeout(werr) and select(2, sys.sleep(M.RETRY_SECONDS)) == "interrupted" then
      return "signal"
    end
  end
end

--- A session that left its Service (or whose sessions were ended) may
--- still be routed to by proxy pods that run an older configuration while
--- they drain (preStop, keepalive_time, in-flight requests): its holder
--- keeps the tunnel (returns) only once they are gone, or after
--- DRAIN_SECONDS.
---@param client table
---@param s table the local session record
---@param state czctl.session.SharedState|nil the Service's czctl state without the session (nil: none)
---@param message string|nil why the session ended
---@param log fun(fmt: string, ...)
function M.drain(client, s, state, message, log)
  local ns, name = s.namespace, s.service
  local old = shared.pods_routing_before(client, ns, name, state or { sessions = {}, version = 0 })
  if not old or next(old) == nil then return end
  if message and message ~= M.CLOSED_ELSEWHERE then
    -- told now: the holder (and a --wait terminal) ends once they are gone
    log("warning: the session ends: %s", message)
  end
  log("keeping the tunnel until the proxy pods that still route to this session are gone")
  shared.wait_pods(client, ns, name, function(pods)
    for pod in pairs(old) do if pods[pod] then return false end end
    return true
  end, M.DRAIN_SECONDS, M.DRAIN_POLL_SECONDS)
end

return M
