-- session-keep: the keeper of an intercept session; internal, started
-- detached by `czctl service intercept` for every session (the holder of
-- docs/decisions.md, section 4, together with the --wait process).
--
-- It starts the session's tunnel (a process for ngrok, nothing for direct),
-- so the tunnel outlives the command that set the session up (without
-- --wait), reports it in the session's .tunnel.json, and, once the session
-- is active, runs its guard (`czctl session keep ID --guard`, see
-- czctl.session.guard): a child that renews the heartbeat Lease, watches
-- the Service and the proxy, re-asserts or repairs them, and ends the
-- session when the proxy is gone or a controller keeps reverting the
-- Service. The keeper stops the tunnel when the session ends: the session
-- file is removed (session close); the command died before finishing setup,
-- or, with --wait, at all (even by SIGKILL); the guard found the session
-- closed elsewhere or ended it; or SIGTERM. A tunnel that dies, or a session
-- the guard ended, is reported in .tunnel.json (status "dead") and the log.
-- So is a tunnel that is down because nothing accepts on the local port
-- (`down_since`; requests then go to the in-cluster version): the guard
-- carries it into the heartbeat Lease, for `session list` on any machine.
--
-- It lives as long as the session, so it stays small: it never loads the
-- Kubernetes client or libcurl itself; the guard, a child, does.
local session = require "czctl.session"
local signal = require "czctl.signal"
local process = require "czctl.process"
local sys = require "czctl.sys"

-- The guard's exit codes.
local CLOSED_ELSEWHERE = 3
local ENDED = 4
local GUARD_RESTART = 5   -- seconds before a guard that failed is started again

local function log(fmt, ...)
  io.stdout:write(os.date("!%Y-%m-%dT%H:%M:%SZ "), string.format(fmt, ...), "\n")
  io.stdout:flush()
end

--- `--guard`: guard the session until it ends (czctl.session.guard).
local function guard(s)
  local kube = require "czctl.kube"
  local client, err = kube.connect{ kubeconfig = s.kubeconfig, context = s.context,
                                    component = "session-keep" }
  if not client then log("guard: %s", tostring(err)); return 1 end
  local outcome, message = require("czctl.session.guard").run(client, s, log)
  if outcome == "signal" then return 0 end
  log("%s: %s", outcome, tostring(message))
  -- (a session closed here meanwhile has no files left to add one to)
  if session.load(s.id) then session.write_end(s.id, message) end
  return outcome == "ended" and ENDED or CLOSED_ELSEWHERE
end

return {
  summary = "Hold the tunnel of an intercept session (internal)",
  hidden = true,
  usage = "SESSION",
  args = { { name = "session", help = "session id", required = true } },
  flags = {
    { name = "guard", type = "boolean",
      help = "run only the session's guard (Lease, watch, re-assert, repair); exit 3 when the session is no "
             .. "longer on its Service, 4 when the guard ended it" },
  },
  run = function(ctx)
    local id = ctx.args.session
    local s = session.load(id)
    if not s then error("no local session " .. id, 0) end
    if ctx.flags.guard then return guard(s) end
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

    local guard_child, guard_after = nil, 0
    local reason, ended_here
    while true do
      local sig = signal.wait(1)
      if sig then reason = "received " .. sig; break end
      local current = session.load(id)
      if not current then reason = "session closed"; break end
      if current.parent_pid and (current.state == "starting" or current.wait)
         and not session.same_process(current.parent_pid, current.parent_start) then
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
      -- The tunnel is down while nothing accepts on the local port: noted
      -- with since when (a connect to 127.0.0.1, once a second).
      local up = sys.listening("127.0.0.1", s.local_port, 0.2) and true or false
      if up == (facts.down_since ~= nil) then
        facts.down_since = (not up) and os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(sys.time())) or nil
        session.write_tunnel_status(id, facts)
        log(up and "tunnel up again" or "tunnel down: nothing listens on 127.0.0.1:%d", s.local_port)
      end
      if guard_child then
        local code = guard_child.handle:wait(0)
        if code then
          guard_child:close()
          guard_child = nil
          if code == CLOSED_ELSEWHERE or code == ENDED then
            local why = session.read_end(id) or "the Service no longer carries this session (closed elsewhere)"
            facts.status, facts.error = "ended", why
            session.write_tunnel_status(id, facts)
            reason, ended_here = why, true
            break
          end
          log("guard exited with %d; starting it again in %ds", code, GUARD_RESTART)
          guard_after = sys.now() + GUARD_RESTART
        end
      elseif current.state == "active" and sys.now() >= guard_after then
        guard_child = process.spawn({ sys.exe(), "session", "keep", id, "--guard" },
                                    { stdin = "null", stdout = "inherit", stderr = "inherit" })
      end
    end
    signal.clear()
    log("stopping: %s", reason)
    if guard_child then
      guard_child:kill("TERM")
      guard_child:wait(5)
      guard_child:close()
    end
    handle:stop()
    -- Ended or closed from elsewhere: nothing is left in the cluster, so
    -- forget it here too, unless a --wait process holds it (it reports the
    -- reason and removes the files), or a `session close` started here
    -- (it removes them when done; if it fails half-way, running it again
    -- needs the file). After a crash during setup the file stays:
    -- `session close` needs it.
    local current = session.load(id)
    if ended_here and current and current.closing_pid == nil
       and not (current.wait and session.same_process(current.parent_pid, current.parent_start)) then
      session.remove(id)
    end
    return 0
  end,
}
