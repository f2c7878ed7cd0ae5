-- czctl.session.heartbeat: a session's heartbeat in the cluster
-- (docs/decisions.md section 4): a coordination.k8s.io/v1 Lease `czctl-<id>`
-- that the session's holder renews, so anyone with the cluster can tell a
-- session whose holder is gone (`czctl session close --stale`) and see a
-- tunnel that is down and since when (`czctl session list`). The holder
-- renews from its keeper's periodic cluster check; this module only builds,
-- writes and reads the Lease. No processes, no printing.
local records = require "czctl.session.records"

local M = {}

-- A holder that has not renewed for this long is gone (the keeper renews
-- every 15 s: four chances).
M.DURATION = 60
-- On the Lease: since when the holder sees the tunnel down (RFC 3339), absent while it is up.
M.DOWN_ANNOTATION = "czctl.io/tunnel-down-since"
M.SESSION_LABEL = "czctl.io/session"
M.MANAGED_BY = "app.kubernetes.io/managed-by"

--- The Lease's name for a session.
---@param id string
---@return string
function M.name(id)
  return "czctl-" .. id
end

-- MicroTime, as the API server writes it: 2026-12-06T10:00:00.000000Z
local function micro_time(t)
  local whole = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", whole) .. string.format(".%06dZ", math.floor((t - whole) * 1e6))
end

--- Renew (or create) a session's Lease, with the tunnel's state.
---@param client table czctl.kube client
---@param s {id: string, namespace: string} the session
---@param holder string who holds it (host:pid)
---@param now number seconds since the epoch
---@param down_since string|nil RFC 3339 time since when the tunnel is down, nil while up
---@return table|nil lease
---@return any err
function M.renew(client, s, holder, now, down_since)
  local kube = require "czctl.kube"
  local name = M.name(s.id)
  local lease, err = client:get("Lease", name, { namespace = s.namespace })
  if not lease then
    if not kube.not_found(err) then return nil, err end
    return client:create({
      apiVersion = "coordination.k8s.io/v1", kind = "Lease",
      metadata = { name = name, namespace = s.namespace,
                   labels = { [M.MANAGED_BY] = "czctl", [M.SESSION_LABEL] = s.id },
                   annotations = down_since and { [M.DOWN_ANNOTATION] = down_since } or nil },
      spec = { holderIdentity = holder, leaseDurationSeconds = M.DURATION,
               acquireTime = micro_time(now), renewTime = micro_time(now) },
    }, { namespace = s.namespace })
  end
  return client:patch("Lease", name, {
    metadata = { annotations = { [M.DOWN_ANNOTATION] = down_since or records.null } },
    spec = { holderIdentity = holder, leaseDurationSeconds = M.DURATION, renewTime = micro_time(now) },
  }, { namespace = s.namespace, type = "merge" })
end

--- The Leases of czctl sessions, by "namespace/id".
---@param client table
---@param opts {namespace?: string, all_namespaces?: boolean}
---@return table<string, table>|nil leases
---@return any err
function M.list(client, opts)
  local list, err = client:list("Lease", { namespace = opts.namespace, all_namespaces = opts.all_namespaces,
                                          labelSelector = M.MANAGED_BY .. "=czctl" })
  if not list then return nil, err end
  local by = {}
  for _, l in ipairs(list.items or {}) do
    local labels = type(l.metadata.labels) == "table" and l.metadata.labels or {}
    if labels[M.SESSION_LABEL] then by[l.metadata.namespace .. "/" .. labels[M.SESSION_LABEL]] = l end
  end
  return by
end

--- What a session's Lease says: "ok", "tunnel-down" (since when) or
--- "stale" (the holder is gone: no renewal for DURATION seconds; or no
--- Lease at all for a session older than that).
---@param lease table|nil
---@param started string|number|nil when the session started (RFC 3339 or epoch)
---@return {state: "ok"|"tunnel-down"|"stale", since: string|nil}
function M.state(lease, started)
  if not lease then
    local age = records.age_seconds(started)
    if age and age > M.DURATION then return { state = "stale", since = nil } end
    return { state = "ok" }
  end
  local spec = lease.spec or {}
  local renewed = spec.renewTime or spec.acquireTime
  local quiet = records.age_seconds(renewed)
  if not quiet or quiet > (tonumber(spec.leaseDurationSeconds) or M.DURATION) then
    return { state = "stale", since = renewed }
  end
  local annotations = type(lease.metadata.annotations) == "table" and lease.metadata.annotations or {}
  local down = annotations[M.DOWN_ANNOTATION]
  if type(down) == "string" then return { state = "tunnel-down", since = down } end
  return { state = "ok" }
end

--- The state as a few words for a table: "ok", "tunnel down since 10:02:03Z (4m)", "stale since ...".
---@param st {state: string, since: string|nil}
---@return string
function M.describe(st)
  if st.state == "ok" then return "ok" end
  local words = st.state == "stale" and "stale (holder gone)" or "tunnel down"
  if not st.since then return words end
  local clock = tostring(st.since):match("T(%d+:%d+:%d+)") or st.since
  return string.format("%s since %sZ (%s)", words, clock, records.format_age(records.age_seconds(st.since)))
end

return M
