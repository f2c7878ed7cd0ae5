-- driver.lua: runs one czctl.core.portforward handle for the tunnel tests
-- (tests/tunnel/tunnellib.py) and reports on stdout, one line each:
--   READY <host> <port>        forward: where the local listener is
--   READY pool                 pool: started
--   EVENT <kind> <message>     every event of the handle
--   STATS <json>               the stats, whenever they change (at most every 50 ms)
-- It ends (after a last STATS line) on SIGTERM or SIGINT, or on an error
-- while opening (printed as "FAILED <message>", exit 1).
--
-- usage: czctl run tests/tunnel/driver.lua forward|pool KEY=VALUE...
--   keys: the options of portforward.forward / portforward.pool (numbers
--   become numbers), plus kubeconfig= and context= for the client, and
--   control=FILE: a line "retarget POD" written there (atomically) is applied
--   and the file removed.
local kube = require "czctl.core.kube"
local portforward = require "czctl.core.portforward"
local cjson = require "cjson"

local mode = arg[1]
assert(mode == "forward" or mode == "pool", "usage: driver.lua forward|pool KEY=VALUE...")
local opts, client_opts, control = {}, {}, nil
for i = 2, #arg do
  local key, value = arg[i]:match("^([%w_]+)=(.*)$")
  assert(key, "not KEY=VALUE: " .. arg[i])
  if key == "kubeconfig" or key == "context" then
    client_opts[key] = value
  elseif key == "control" then
    control = value
  else
    opts[key] = tonumber(value) or value
  end
end

local function say(...)
  io.stdout:write(table.concat({ ... }, " "), "\n")
  io.stdout:flush()
end

local cfg, err = kube.load_config(client_opts)
if not cfg then say("FAILED", err) os.exit(1) end
local client
client, err = kube.client(cfg)
if not client then say("FAILED", err) os.exit(1) end
local pf
pf, err = portforward[mode](client, opts)
if not pf then say("FAILED", err) os.exit(1) end

if mode == "forward" then
  say("READY", pf:address())
else
  say("READY", "pool")
end

local last = ""
local function report()
  local s = pf:stats()
  s.since = nil
  local line = cjson.encode(s)
  if line ~= last then
    say("STATS", line)
    last = line
  end
end

while true do
  local ev, why = pf:event(0.05)
  if ev then
    say("EVENT", ev.kind, ev.message or "")
  elseif why == "interrupted" then
    break
  end
  local f = control and io.open(control)
  if f then
    local pod = f:read("l"):match("^retarget (%S+)$")
    f:close()
    os.remove(control)
    if pod then pf:retarget(pod) end
  end
  report()
end
report()
pf:close()
