-- Specification of relays left behind (issue 11): which tunnel objects in
-- the cluster belong to no live session, so that `session list` shows them
-- "orphaned" and `session close --stale` / `session close ID` delete them
-- (czctl.session.cluster.tunnel_left and left_tunnels, czctl.tunnel.kube.find).
-- A fake API server answers the LISTs; the cluster side is in
-- tests/e2e/test_kube_tunnel.sh ("relays left behind").
local cluster = require "czctl.session.cluster"
local keeper = require "czctl.session.keeper"
local kube_tunnel = require "czctl.tunnel.kube"
local sys = require "czctl.core.sys"

local function rfc3339(seconds_ago) return os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() - seconds_ago) end

-- A fake client: list(kind) answers from `objects` (kind -> items) or the
-- error in `errors` (kind -> err).
local function fake(objects, errors)
  local client = { lists = {} }
  function client.list(_, kind, opts)
    client.lists[#client.lists + 1] = kind .. " " .. tostring(opts.labelSelector)
    if errors and errors[kind] then return nil, errors[kind] end
    return { items = objects[kind] or {} }
  end
  return client
end

-- A relay object of session `id`, made `age` seconds ago.
local function relay(kind, id, age, ns)
  local o = kube_tunnel.objects{ namespace = ns or "team", id = id, service = "demo" }
  for _, obj in ipairs(o) do
    if obj.kind == kind then
      obj.metadata.creationTimestamp = rfc3339(age)
      return obj
    end
  end
end

describe("cluster.tunnel_left: whether a tunnel's objects belong to no live session", function()
  local held = { id = "held", keeper_pid = sys.getpid(), keeper_start = keeper.process_start(sys.getpid()) }
  local dead = { id = "dead", keeper_pid = nil, state = "active" }
  local old, young = cluster.STALE_WITHOUT_LEASE + 60, 10
  local cases = {
    -- on a Service, mine, heartbeat, age of the objects -> left?
    { "a session on its Service is live, whatever else", true, dead, { expired = true }, old, false },
    { "this machine's session that no process here holds (a close died half-way)", false, dead, nil, young, true },
    { "this machine's session its keeper still holds (draining after it left)", false, held, nil, old, false },
    { "another's session whose heartbeat Lease expired", false, nil, { expired = true }, young, true },
    { "another's session whose heartbeat is renewed", false, nil, { expired = false }, old, false },
    { "another's, no Lease, recent objects: an intercept may still be starting", false, nil, nil, young, false },
    { "another's, no Lease, objects older than any intercept takes to start", false, nil, nil, old, true },
    { "another's, no Lease, no creation time known", false, nil, nil, nil, false },
  }
  for _, c in ipairs(cases) do
    it(c[1], function()
      assert.equal(c[6], cluster.tunnel_left(c[2], c[3], c[4], c[5]))
    end)
  end
end)

describe("kube.find: the relays in the cluster, one entry per session", function()
  it("groups a session's Deployment, Service and NetworkPolicy, with its Service and oldest creation", function()
    local client = fake({ Deployment = { relay("Deployment", "aaa", 30), relay("Deployment", "bbb", 5) },
                          Service = { relay("Service", "aaa", 40) },
                          NetworkPolicy = { relay("NetworkPolicy", "aaa", 20) } })
    local found = assert(kube_tunnel.find(client, { namespace = "team" }))
    assert.equal(2, #found)
    assert.same({ "Deployment", "Service", "NetworkPolicy" }, found[1].objects)
    assert.equal("aaa", found[1].id)
    assert.equal("team", found[1].namespace)
    assert.equal("demo", found[1].service)
    assert.equal("relay czctl-relay-aaa", found[1].name)
    assert.equal(rfc3339(40), found[1].created)
    assert.same({ "Deployment" }, found[2].objects)
    -- only czctl's relays are listed
    assert.equal("Deployment app.kubernetes.io/managed-by=czctl,app.kubernetes.io/component=relay", client.lists[1])
  end)
  it("a user who may not list NetworkPolicies still gets the Deployments and Services", function()
    local client = fake({ Service = { relay("Service", "aaa", 40) } },
                        { NetworkPolicy = { code = 403, reason = "Forbidden", message = "forbidden" } })
    local found = assert(kube_tunnel.find(client, { namespace = "team" }))
    assert.same({ "Service" }, found[1].objects)
  end)
  it("any other failure is the caller's error", function()
    local client = fake({}, { Service = { code = 500, reason = "InternalError", message = "boom" } })
    local found, err = kube_tunnel.find(client, { namespace = "team" })
    assert.is_nil(found)
    assert.equal("InternalError", err.reason)
  end)
end)

describe("cluster.left_tunnels: relays whose session is on no Service and whose holder is gone", function()
  local old = cluster.STALE_WITHOUT_LEASE + 60
  local client = fake({ Deployment = { relay("Deployment", "onsvc", old), relay("Deployment", "gone", old),
                                       relay("Deployment", "young", 10), relay("Deployment", "beating", old),
                                       relay("Deployment", "expired", 10) } })
  local sessions = { { id = "onsvc", namespace = "team", service = "demo" },
                     -- the same id on another namespace's Service does not hold this relay
                     { id = "gone", namespace = "other", service = "demo" } }
  local beats = { beating = { expired = false }, expired = { expired = true } }
  local function ids(left)
    local out = {}
    for _, t in ipairs(left) do out[#out + 1] = t.id .. "/" .. t.tunnel .. (t.gone and "" or " (not gone)") end
    return out
  end
  it("lists the old one without a Lease and the one whose Lease expired", function()
    local left = assert(cluster.left_tunnels(client, { namespace = "team" },
                                             { server = "https://x", sessions = sessions, beats = beats }))
    assert.same({ "gone/kube", "expired/kube" }, ids(left))
  end)
  it("keeps the relays of a Service whose czctl annotations cannot be read (their sessions cannot be told)", function()
    local with_unreadable = { sessions[1], sessions[2],
                              { id = "-", namespace = "team", service = "demo", unreadable = "annotation mangled" } }
    assert.same({}, ids(assert(cluster.left_tunnels(client, { namespace = "team" },
                                                    { server = "https://x", sessions = with_unreadable,
                                                      beats = beats }))))
  end)
  it("opts.id narrows to one session; force takes any whose session is on no Service", function()
    assert.same({}, ids(assert(cluster.left_tunnels(client, { namespace = "team" },
                                                    { server = "https://x", sessions = sessions, beats = beats,
                                                      id = "young" }))))
    assert.same({ "young/kube (not gone)" }, ids(assert(cluster.left_tunnels(client, { namespace = "team" },
                                                                  { server = "https://x", sessions = sessions,
                                                                    beats = beats, id = "young", force = true }))))
    assert.same({}, ids(assert(cluster.left_tunnels(client, { namespace = "team" },
                                                    { server = "https://x", sessions = sessions, beats = beats,
                                                      id = "onsvc", force = true }))))
  end)
end)
