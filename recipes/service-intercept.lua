-- service-intercept: send the requests of a Kubernetes Service that carry a
-- header (or all of them) to a port on this machine, while every other
-- request keeps reaching the in-cluster version.
--
-- What `czctl service intercept` does, in order. Each step is a method of
-- czctl.intercept.workflow (lua/czctl/intercept/workflow.lua); every change
-- is registered for undo just before it is made, so an error or Ctrl-C at
-- any point rolls back.
local STEPS = {
  "check_access",          -- 0. ask the API server whether every step (and its undo) is allowed
  "resolve_service",       -- 1. the Service and the port to intercept (-r, or its only port); a rule
                           --    that would take another session's requests is refused here
  "export_env",            --    with --env-file: the app's environment, to a 0600 file
  "record_session",        -- 2. a local session file, so a crash at any later point leaves a trace
  "start_tunnel",          -- 3. the tunnel (ngrok, held by a keeper process; or direct): its URL is
                           --    where the proxy sends this session's requests
  "create_route_secret",   --    the tunnel's route (URL, secret header, certificates) in the session's
                           --    own Secret, which the proxy mounts; nothing of it goes on the Service
  "join_service",          -- 4. one patch, guarded by resourceVersion, adds this session (rule, tunnel,
                           --    owner) to the Service's annotations: several sessions share one proxy
  "update_proxy",          -- 5. the Service's proxy from those annotations: a copy of the Service (the
                           --    route to the pods), the NGINX configuration in an immutable Secret
                           --    named by its hash, the Deployment pointed at it (a rolling update)
  "wait_proxy_ready",      -- 6. by watch, until the proxy runs the configuration with this route
  "route_service",         -- 7. the first session only: one guarded patch points the Service at the
                           --    proxy and saves the selector and target ports it replaces
  "wait_routed",           -- 8. by watch, until the Service's Endpoints list only the new proxy pods
}
-- Then: the result (session id, header, tunnel, a curl line), and with
-- --wait the command stays until Ctrl-C/SIGTERM and closes the session.
--
-- To change one step, do not copy this file: write a short recipe that
-- passes hooks (edit the proxy Deployment, the routing rule, ...) to
-- require("czctl.intercept").builtin_recipe():with{...}; see the README,
-- "Customising the intercept", and docs/recipes.md.
local workflow = require "czctl.intercept.workflow"

return workflow.recipe{ steps = STEPS }
