-- examples/ci/ci-job.lua: what a CI job does with czctl, as a `czctl run`
-- script (the same job as ci-job.sh, through the Lua API; see docs/ci.md):
--   1. start the pull request's build on the runner (here: local-build.py),
--   2. intercept the Service with a header unique to this job,
--   3. run the test command (integration-tests.sh) against the cluster,
--   4. close the session when it exits, whatever happens; exit with its code.
--
--   czctl run examples/ci/ci-job.lua [SERVICE [NAMESPACE]]
--
-- Settings (environment) as for ci-job.sh: LOCAL_PORT (8080), TUNNEL
-- (direct), TUNNEL_HOST, CI_JOB_ID (default: GitHub's run id and job name),
-- CLUSTER_EXEC. SIGINT/SIGTERM to czctl are passed to the test command,
-- and the session is closed, as with `czctl service intercept ... -- CMD`:
-- this is the same workflow, given options instead of flags.
-- luacheck: read globals ctx
local intercept = require "czctl.intercept"
local process = require "czctl.process"
local proxy = require "czctl.proxy"
local sys = require "czctl.sys"

local service, namespace = arg[1] or "demo", arg[2] or "default"
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local port = math.tointeger(tonumber(os.getenv("LOCAL_PORT") or "8080"))
local job = os.getenv("CI_JOB_ID")
  or string.format("%s-%s", os.getenv("GITHUB_RUN_ID") or "local", os.getenv("GITHUB_JOB") or "job")
job = job:gsub("[^%w.-]", "-") -- a header value is a token
local name = "local build " .. job
local header = "X-CI-Job: " .. job

-- 1. the local build; closing the handle (at the end, or on an error) stops it
local build <close> = assert(process.spawn({ "python3", here .. "/local-build.py", "--port", tostring(port),
                                             "--name", name }, { stdout = "null", stderr = "inherit" }))
local deadline = sys.now() + 10
while not sys.listening("127.0.0.1", port) do
  local code = build:await(0.05)
  if code then error(string.format("the local build exited (code %d) before it listened", code), 0) end
  if sys.now() > deadline then error("the local build did not listen on port " .. port .. " within 10 s", 0) end
end

-- 2-4. the intercept, with the test command as its `-- CMD`: the returned
-- exit code (the command's, or 128+N after a signal) is this script's
local start = intercept.workflow()
return start(ctx, {
  service = service, namespace = namespace, local_port = port,
  rule = assert(proxy.from_flags{ header = header }), header = header,
  tunnel = os.getenv("TUNNEL") or "direct", tunnel_host = os.getenv("TUNNEL_HOST"),
  command = { "sh", here .. "/integration-tests.sh", name },
})
