-- session-close: end intercept sessions and undo what they changed.
--
-- Sessions belong to someone: each carries its owner in the cluster (user,
-- machine, and the id of the czctl state directory that started it, see
-- czctl.session.records.owner). Which sessions:
--   (none)          yours: those of this state directory (found in the
--                   cluster by owner, even when the local files are gone,
--                   and by the local records, which know their namespace)
--   SESSION         that one; another owner's needs --force, and says whose
--   --all           every session in the namespace, others' too: on a
--                   terminal it lists them and asks, scripts pass --yes
--   --stale         every session in the namespace whose holder is gone,
--                   others' too (a dead holder holds nothing), as session
--                   list tells it: one of this machine's that no process
--                   here holds; or its heartbeat Lease expired; or it never
--                   had one and is older than any intercept takes to start
--                   (STALE_WITHOUT_LEASE)
-- The namespace is taken as kubectl takes it: -n, else the kubeconfig
-- context's, else default. An id that matches nothing is an error listing
-- the sessions that exist.
--
-- Closing takes the session off its Service (czctl.session.cluster.leave):
-- the last one out restores only what czctl changed and deletes the proxy.
local session = require "czctl.session"
local intercept = require "czctl.intercept"
local signal = require "czctl.signal"
local kube = require "czctl.kube"
local util = require "czctl.util"
local flags = require "czctl.flags"
local sys = require "czctl.sys"

-- A session without a heartbeat Lease is stale only once it is older than
-- an intercept may take to start (its guard creates the Lease once active).
local STALE_WITHOUT_LEASE = 300

local function fail(err)
  signal.check()
  intercept.raise(err)
end

local function owner_text(owner)
  return require("czctl.session.shared").owner_text(owner)
end

local function render(r)
  local lines = {}
  for _, c in ipairs(r.closed) do
    if c.stale then
      lines[#lines + 1] = string.format("Removed the local record of session %s in %s (it was already closed in the cluster)",
                                        c.id, c.namespace)
    elseif c.forgotten then
      lines[#lines + 1] = string.format("Forgot the local record of session %s in %s (the cluster was not contacted)",
                                        c.id, c.namespace)
    elseif c.orphan then
      lines[#lines + 1] = string.format("Deleted the proxy of Service %s in %s, which no session used", c.service,
                                        c.namespace)
    else
      lines[#lines + 1] = string.format("Closed session %s in %s%s%s", c.id, c.namespace,
                                        c.restored and (" (Service " .. c.service .. " restored)") or "",
                                        c.owner and not c.mine and (", which belonged to " .. c.owner) or "")
    end
  end
  if #r.closed == 0 then lines[#lines + 1] = r.message or "No session to close." end
  return table.concat(lines, "\n")
end

-- One line per session, for a list in a message or a confirmation.
local function describe(list)
  local parts = {}
  for _, s in ipairs(list) do
    parts[#parts + 1] = s.orphan and string.format("the unused proxy of %s/%s", s.namespace, s.service)
      or string.format("%s (%s/%s, %s)", s.id, s.namespace, s.service, owner_text(s.owner))
  end
  return table.concat(parts, "; ")
end

return {
  summary = "Close intercept sessions and restore the Services they changed",
  usage = "[SESSION] [flags]",
  description = [[
Takes each session off its Service; the last session on a Service restores
the selector and target ports czctl replaced (changes others made meanwhile
are kept) and deletes the proxy. What to undo is read from the cluster, so
this works after a crash, from another machine, and when run twice.
Which sessions: none given, yours (this state directory's, found in the
cluster by owner); SESSION, that one (someone else's needs --force);
--all, every session in the namespace (asks on a terminal; --yes for
scripts); --stale, every session in the namespace whose holder is gone
(its heartbeat Lease is no longer renewed), whoever owns it. The
namespace: -n, else the kubeconfig context's, else default.
When the cluster of SESSION is gone, --forget discards its local record.]],
  args = { { name = "session", help = "the session id (see czctl session list)", complete = "sessions" } },
  flags = flags.join({
    { name = "all", short = "a", type = "boolean", help = "close every session in the namespace, others' too" },
    { name = "yes", short = "y", type = "boolean", help = "with --all: do not ask" },
    { name = "stale", type = "boolean",
      help = "close the sessions whose holder is gone (heartbeat Lease not renewed), others' too" },
    { name = "force", type = "boolean", help = "with SESSION: close it even when it is someone else's" },
    { name = "forget", type = "boolean",
      help = "with SESSION: only discard this machine's record of it (stop its tunnel, remove its files) "
             .. "without contacting the cluster, e.g. when that cluster is gone" },
  }, flags.kube{ namespace_help = "namespace (default: the kubeconfig context's, else default)" }, flags.output()),
  run = function(ctx)
    -- Closing is cleanup that must finish: signals are recorded (exit 128+N
    -- afterwards) but interrupt none of its calls, which have their own timeouts.
    local _ <close> = sys.shield()
    local f, out = ctx.flags, ctx.out
    local id = ctx.args.session
    if id and f.all then return ctx.usage_error("give a SESSION or --all, not both") end
    if id and not id:find("^[a-z0-9-]+$") then return ctx.usage_error("invalid session id " .. id) end
    if f.forget and not id then return ctx.usage_error("--forget needs a SESSION") end
    if f.force and not id then return ctx.usage_error("--force goes with a SESSION (use --all for every session)") end
    if f.yes and not f.all then return ctx.usage_error("--yes goes with --all") end
    if f.stale and (id or f.all or f.forget) then
      return ctx.usage_error("--stale chooses the sessions itself: give no SESSION, --all or --forget with it")
    end
    local closed, failures = setmetatable({}, util.array_mt), setmetatable({}, util.array_mt)
    local warnings = setmetatable({}, util.array_mt)

    if f.forget then
      local mine = session.load(id)
      if not mine then fail(string.format("no local record of session %s on this machine", id)) end
      session.forget(mine)
      closed[1] = { id = id, namespace = mine.namespace, service = mine.service, forgotten = true,
                    restored = false }
      out:result({ apiVersion = "czctl.io/v1", kind = "CloseResult", closed = closed, failed = failures }, render)
      return 0
    end

    -- A --kubeconfig given on the command line wins over a session's own.
    local given_kubeconfig = ctx.sources.kubeconfig == "flag" and f.kubeconfig or nil
    local client = ctx.kube()
    local server = client:info().server
    local ns = f.namespace or client.namespace or "default"
    local function client_for(s)
      if not s or given_kubeconfig or f.context or (s.kubeconfig == nil and s.context == nil) then return client end
      local c, err = kube.connect{ kubeconfig = s.kubeconfig, context = s.context, component = ctx.recipe }
      if not c then fail(err) end
      return c
    end
    local function forget_hint(s)
      return string.format("if that cluster is gone, discard the local record with: czctl session close %s --forget",
                           s.id)
    end

    -- targets: {id, namespace, service, service_object, owner, mine, local_session, client, stale?, orphan?}
    local targets, seen = {}, {}
    local function add(t)
      local key = t.orphan and ("proxy/" .. t.namespace .. "/" .. t.service) or t.id
      if seen[key] then return end
      seen[key] = true
      targets[#targets + 1] = t
    end
    local warned = {}
    local function discover(c, opts)
      local found, err = session.discover(c, opts)
      if not found then fail(err) end
      -- A Service whose annotations cannot be read is left as it is: an
      -- error when the session looked for may be on it, else said once.
      local readable, unreadable = {}, {}
      for _, s in ipairs(found) do
        if s.unreadable then unreadable[#unreadable + 1] = s else readable[#readable + 1] = s end
      end
      if opts.id and #readable == 0 and unreadable[1] then fail(unreadable[1].unreadable) end
      for _, s in ipairs(unreadable) do
        if not warned[s.unreadable] then
          warned[s.unreadable] = true
          out:warn("%s", s.unreadable)
        end
      end
      return readable
    end
    local function from_cluster(s, c)
      return { id = s.id, namespace = s.namespace, service = s.service, service_object = s.service_object,
               owner = s.owner, mine = s.orphan or session.is_mine(s.owner), orphan = s.orphan,
               local_session = (not s.orphan) and session.load(s.id) or nil, client = c }
    end
    -- A local record the cluster no longer knows, held by no process here,
    -- was closed elsewhere: only the record is left (stale).
    -- What is left of its Service's proxy, if no session uses it, goes too.
    local function from_local(mine, c)
      local found = discover(c, { namespace = mine.namespace, id = mine.id })
      if found[1] then return add(from_cluster(found[1], c)) end
      -- (an active session is held by the cluster alone, whatever its keeper)
      add({ id = mine.id, namespace = mine.namespace, service = mine.service, owner = mine.owner, mine = true,
            local_session = mine, client = c, stale = mine.state == "active" or not session.held(mine) })
      for _, s in ipairs(discover(c, { namespace = mine.namespace })) do
        if s.orphan and s.service == mine.service then add(from_cluster(s, c)) end
      end
    end

    if id then
      local mine = session.load(id)
      if mine then
        local ok, c = pcall(client_for, mine)
        if not ok then
          fail(string.format("cannot reach the cluster of session %s (%s): %s; %s", id,
                             mine.server or mine.kubeconfig or "its kubeconfig", tostring(c), forget_hint(mine)))
        end
        if not session.same_cluster(mine, c:info().server) then
          fail(string.format("session %s was started on the cluster at %s, not %s; use that cluster's kubeconfig, or %s",
                             id, mine.server, tostring(c:info().server), forget_hint(mine)))
        end
        local ok2, err = pcall(from_local, mine, c)
        if not ok2 then
          signal.check()
          if type(err) == "table" and err.reason == "Transport" then
            fail(string.format("session %s: %s; %s", id, tostring(err), forget_hint(mine)))
          end
          error(err, 0)
        end
      else
        -- the record knows its namespace; without one: this namespace, then all
        local found = discover(client, { namespace = ns, id = id })
        if #found == 0 then
          local ok, everywhere = pcall(discover, client, { all_namespaces = true, id = id })
          found = ok and everywhere or {}
        end
        if #found == 0 then
          local existing = discover(client, { namespace = ns })
          fail(string.format("no session %s in namespace %s; %s", id, ns,
                             #existing == 0 and "there are no sessions there"
                             or ("the sessions there: " .. describe(existing))))
        end
        add(from_cluster(found[1], client))
      end
      local t = targets[1]
      if t and not t.mine and not f.force then
        fail(string.format("session %s belongs to %s, not to you; to close it anyway: czctl session close %s "
                           .. "-n %s --force", id, owner_text(t.owner), id, t.namespace))
      end
    elseif f.stale then
      out:step("Find the sessions whose holder is gone in namespace " .. ns, function()
        local beats = session.heartbeats(client, { namespace = ns })
        for _, s in ipairs(discover(client, { namespace = ns })) do
          local beat, age = beats[s.id], session.age_seconds(s.started)
          local mine = not s.orphan and session.load(s.id) or nil
          if mine and not session.same_cluster(mine, server) then mine = nil end
          if not s.orphan and ((mine and not session.held(mine)) or (beat and beat.expired)
                               or (not beat and age and age > STALE_WITHOUT_LEASE)) then
            add(from_cluster(s, client))
          end
        end
      end)
    elseif f.all then
      for _, s in ipairs(discover(client, { namespace = ns })) do add(from_cluster(s, client)) end
      for _, mine in ipairs(session.list_local_for(server)) do
        if mine.namespace == ns and not seen[mine.id] then from_local(mine, client) end
      end
      local others = 0
      for _, t in ipairs(targets) do if not t.mine then others = others + 1 end end
      if #targets > 0 and not f.yes then
        if not (sys.isatty(0) and sys.isatty(2)) then
          fail(string.format("--all would close %d session(s) in namespace %s (%d of others: %s); "
                             .. "to confirm without a terminal, add --yes", #targets, ns, others, describe(targets)))
        end
        io.stderr:write(string.format("This closes %d session(s) in namespace %s:\n", #targets, ns))
        for _, t in ipairs(targets) do io.stderr:write("  ", describe({ t }), "\n") end
        io.stderr:write("Close them? [y/N] ")
        io.stderr:flush()
        local answer = io.stdin:read("l") or ""
        if not answer:lower():find("^y") then
          out:result({ apiVersion = "czctl.io/v1", kind = "CloseResult", closed = closed, failed = failures,
                       message = "Nothing closed." }, render)
          return 1
        end
      end
    else
      -- Yours: the cluster's sessions owned by this state directory, then the
      -- local records (each in its own namespace; -n narrows them).
      out:step("Find your sessions in namespace " .. ns, function()
        for _, s in ipairs(discover(client, { namespace = ns })) do
          if s.orphan or session.is_mine(s.owner) then add(from_cluster(s, client)) end
        end
        for _, mine in ipairs(session.list_local_for(server)) do
          if (f.namespace == nil or mine.namespace == f.namespace) and not seen[mine.id] then
            from_local(mine, client_for(mine))
          end
        end
      end)
    end

    for _, t in ipairs(targets) do
      local ok, restored, kept
      if t.stale then
        ok, restored = pcall(session.forget, t.local_session)
      elseif t.orphan then
        ok, restored = pcall(require("czctl.session.shared").delete_proxy, t.client, t.namespace, t.service,
                             function(title, fn) return out:step(title, fn) end)
      else
        ok, restored, kept = pcall(session.close, t.client, t, function(title, fn)
          return out:step(string.format("[%s] %s", t.id, title), fn)
        end)
      end
      if ok then
        for _, w in ipairs(kept or {}) do
          out:warn("Service %s: %s", t.service, w)
          warnings[#warnings + 1] = w
        end
        closed[#closed + 1] = { id = t.id, namespace = t.namespace, service = t.service,
                                restored = (not t.stale and not t.orphan and restored == true),
                                stale = t.stale or nil, orphan = t.orphan or nil, mine = t.mine == true,
                                owner = t.owner and owner_text(t.owner) or nil }
      else
        signal.check()
        failures[#failures + 1] = string.format("session %s: %s", t.id, tostring(restored))
      end
    end
    local message
    if #targets == 0 then
      local ok, existing = pcall(discover, client, { namespace = ns })
      message = string.format("No session of yours to close in namespace %s.", ns)
      if f.stale then
        message = string.format("No stale session in namespace %s: every session's holder renews its heartbeat.", ns)
      elseif ok and #existing > 0 then
        message = message .. string.format(" Others': %s (close one with its id and --force).", describe(existing))
      end
    end
    out:result({ apiVersion = "czctl.io/v1", kind = "CloseResult", closed = closed, failed = failures,
                 warnings = warnings, message = message }, render)
    if #failures > 0 then
      local all = table.concat(failures, "; ")
      -- a failure that names its own remedy command needs no other
      if not all:find("run: czctl session close", 1, true) then
        all = all .. " (run czctl session close again to retry)"
      end
      intercept.raise(all)
    end
    return 0
  end,
}
