-- session-keep: the keeper of an intercept session whose tunnel is a
-- process (ngrok); internal, started detached by `czctl service intercept`.
--
-- It starts the session's tunnel, so the tunnel outlives the command that
-- set the session up (without --wait), reports it in the session's
-- .tunnel.json, and stops it when the session ends: the session file is
-- removed (session close); the command died before finishing setup, or, with
-- --wait, at all (even by SIGKILL); the intercepted Service no longer
-- carries this session (closed from another machine); or SIGTERM. A tunnel
-- that dies is reported in .tunnel.json and the log.
--
-- It lives as long as the session, so it stays small: it never loads the
-- Kubernetes client or libcurl itself. The cluster is asked every 15 s by a
-- short-lived child (`czctl session keep ID --check`), which also renews the
-- session's heartbeat Lease (czctl.session.heartbeat) with the tunnel's
-- state: down (nothing accepts on the local port) since when, or up.
local session = require "czctl.session"
local heartbeat = require "czctl.session.heartbeat"
local intercept = require "czctl.intercept"
local signal = require "czctl.signal"
local process = require "czctl.process"
local sys = require "czctl.sys"

local CLUSTER_CHECK_INTERVAL = 15
local CHECK_TIMEOUT = 60
local CLOSED_ELSEWHERE = 3

--- `--check`: whether the intercepted Service still carries session `s`.
--- Exit 0 yes, CLOSED_ELSEWHERE no, 1 when the cluster cannot tell.
local function still_held(s)
  local kube = require "czctl.kube"
  local client = kube.connect{ kubeconfig = s.kubeconfig, context = s.context }
  if not client then return 1 end
  local svc, err = client:get("Service", s.service, { namespace = s.namespace })
  if not svc then return kube.not_found(err) and CLOSED_ELSEWHERE or 1 end
  local record = intercept.record(svc)
  if not (record and record.session == s.id) then return CLOSED_ELSEWHERE end
  local tunnel = session.tunnel_status(s.id) or {}
  local ok, lerr = heartbeat.renew(client, s, string.format("%s/%s", sys.hostname(), tostring(s.keeper_pid)),
                                   sys.time(), tunnel.down_since)
  if not ok then io.stderr:write("cannot renew the heartbeat Lease: ", tostring(lerr), "\n") end
  return 0
end

local function log(fmt, ...)
  io.stdout:write(os.date("!%Y-%m-%dT%H:%M:%SZ "), string.format(fmt, ...), "\n")
  io.stdout:flush()
end

return {
  summary = "Hold the tunnel of an intercept session (internal)",
  hidden = true,
  usage = "SESSION",
  args = { { name = "session", help = "session id", required = true } },
  flags = {
    { name = "check", type = "boolean",
      help = "only check the cluster: exit 0 if the Service still carries the session, 3 if not" },
  },
  run = function(ctx)
    local id = ctx.args.session
    local s = session.load(id)
    if not s then error("no local session " .. id, 0) end
    if ctx.flags.check then return still_held(s) end
    local provider, perr = session.tunnel_provider(s.tunnel.provider)
    if not provider then
      session.write_tunnel_status(id, { status = "failed", error = perr })
      error(perr, 0)
    end
    -- the agent's log lives with the session's files (removed by session close)
    local handle, err = provider.start{ local_port = s.local_port, host = s.tunnel_host, ca = s.tunnel_ca,
                                        log_file = session.path(id, ".ngrok.log") }
    if not handle then
      session.write_tunnel_status(id, { status = "failed", error = tostring(err) })
      log("tunnel failed: %s", tostring(err))
      return 1
    end
    local facts = session.tunnel_facts(handle, s.tunnel.provider)
    facts.status, facts.keeper_pid = "up", sys.pid()
    session.write_tunnel_status(id, facts)
    log("tunnel up: %s -> localhost:%d", tostring(handle.url), s.local_port)

    -- (the first check also creates the heartbeat Lease)
    local next_cluster_check = sys.now() + CLUSTER_CHECK_INTERVAL
    local reason, closed_elsewhere
    while true do
      local sig = signal.wait(1)
      if sig then reason = "received " .. sig; break end
      local current = session.load(id)
      if not current then reason = "session closed"; break end
      if current.parent_pid and (current.state == "starting" or current.wait)
         and not process.alive(current.parent_pid) then
        reason = current.state == "starting" and "the command setting up the session exited before finishing"
                 or "the command holding the session (--wait) exited"
        break
      end
      if handle.pid then
        -- Only whether the agent runs: a request to its API would load
        -- libcurl and its TLS libraries into this long-lived process.
        local ok, why = (handle.alive or handle.healthy)(handle)
        if not ok then
          facts.status, facts.error = "dead", tostring(why or "the tunnel stopped")
          session.write_tunnel_status(id, facts)
          reason = "tunnel died: " .. facts.error
          break
        end
      end
      -- The tunnel is down while nothing accepts on the local port (requests
      -- then go to the in-cluster version): noted with since when.
      local up = sys.listening("127.0.0.1", s.local_port, 0.2) and true or false
      if up == (facts.down_since ~= nil) then
        facts.down_since = (not up) and os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(sys.time())) or nil
        session.write_tunnel_status(id, facts)
        log(up and "tunnel up again" or "tunnel down: nothing listens on 127.0.0.1:%d", s.local_port)
      end
      if current.state == "active" and sys.now() >= next_cluster_check then
        next_cluster_check = sys.now() + CLUSTER_CHECK_INTERVAL
        -- Asked in a short-lived child: the Kubernetes client (libcurl, TLS)
        -- would otherwise stay loaded here for the whole session.
        local check = process.spawn({ sys.exe(), "session", "keep", id, "--check" },
                                    { stdin = "null", stdout = "null", stderr = "null" })
        local code = check and check:wait(CHECK_TIMEOUT)
        if check then check:close() end
        if code == CLOSED_ELSEWHERE then
          reason = "the Service no longer carries this session (closed elsewhere)"
          closed_elsewhere = true
          break
        end
      end
    end
    signal.clear()
    log("stopping: %s", reason)
    handle:stop()
    -- Closed from elsewhere: nothing is left to close, so forget it here too.
    -- (After a crash during setup the file stays: `session close` needs it.)
    if closed_elsewhere then session.remove(id) end
    return 0
  end,
}
