-- czctl.proxy: routing rules as data, and the NGINX configuration that
-- implements them for the intercept proxy. One entry point over two files
-- of one idea each:
--   czctl.proxy.rules  validate, from_flags, describe, example_request,
--                      compile (a rule -> an NGINX condition and maps)
--   czctl.proxy.nginx  render (the whole nginx.conf, as small emitters)
--   czctl.proxy.route  a session's route into its tunnel (proxy.route): the
--                      files for its Secret, tunnel URL checks (parse_url)
-- Pure functions only: no I/O, no processes, no Kubernetes. The intercept
-- workflow decides where the text goes; tests render it and run a real nginx.
local M = {}

for _, part in ipairs({ "rules", "nginx" }) do
  for name, value in pairs(require("czctl.proxy." .. part)) do M[name] = value end
end

M.route = require "czctl.proxy.route"

return M
