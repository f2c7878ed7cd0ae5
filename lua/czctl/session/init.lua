-- czctl.session: intercept sessions, on this machine and in the cluster.
-- One entry point over three files of one idea each:
--   czctl.session.records  the local record (files under $XDG_STATE_HOME/czctl/sessions)
--   czctl.session.keeper   the processes that hold a session here (keeper, tunnel)
--   czctl.session.cluster  sessions in the cluster: discover, leave, delete, close
-- and czctl.session.shared (required on its own): the one proxy of a Service,
-- its annotations and their guarded patches.
-- A session is known in the cluster (the annotation on the intercepted
-- Service, the objects labelled czctl.io/session=<id>) and, on the machine
-- that started it, by its record; closing works from the cluster alone.
local M = {}

for _, part in ipairs({ "records", "keeper", "cluster" }) do
  for name, value in pairs(require("czctl.session." .. part)) do M[name] = value end
end

return M
