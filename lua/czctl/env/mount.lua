-- czctl.env.mount: a container's ConfigMap and Secret volumes as files on
-- this machine, under a directory, at their mount paths (what
-- `czctl service env --mount DIR` writes; docs/env.md). Follows the volume
-- plugins: all keys (ConfigMap data and binaryData, Secret data) or `items`
-- (key -> path, mode), defaultMode (0644), optional, projected sources, and
-- the mount's subPath; downwardAPI fieldRef items too (a projected
-- serviceAccountToken is not: czctl has no token of the pod's). Secret
-- files never get group or other bits.
local cjson = require "cjson"
local sys = require "czctl.sys"

local M = {}

local function is_null(v) return v == nil or v == cjson.null end

local DEFAULT_MODE = tonumber("644", 8)

-- A path inside the volume: relative, no "..".
local function safe(path)
  if type(path) ~= "string" or path == "" or path:sub(1, 1) == "/" then return false end
  for part in path:gmatch("[^/]+") do if part == ".." then return false end end
  return true
end

-- Files of one ConfigMap or Secret source: { [path] = {data, mode, secret} }.
local function source_files(client, namespace, kind, name, items, default_mode, optional, files)
  local obj, err = client:get(kind, name, { namespace = namespace })
  if not obj then
    if require("czctl.kube").not_found(err) and optional then return true end
    if require("czctl.kube").not_found(err) then
      return nil, string.format("%s %q of a volume not found (the kubelet would not start the pod)", kind, name)
    end
    return nil, err
  end
  local data = {}
  local env = require "czctl.env"
  for k, v in pairs(is_null(obj.data) and {} or obj.data) do data[k] = kind == "Secret" and env.b64decode(v) or v end
  if kind == "ConfigMap" then
    for k, v in pairs(is_null(obj.binaryData) and {} or obj.binaryData) do data[k] = env.b64decode(v) end
  end
  local secret = kind == "Secret"
  if is_null(items) or #items == 0 then
    for k, v in pairs(data) do files[k] = { data = v, mode = default_mode, secret = secret } end
    return true
  end
  for _, it in ipairs(items) do
    if data[it.key] == nil then
      if not optional then
        return nil, string.format("%s %q has no key %q that a volume needs", kind, name, it.key)
      end
    else
      files[it.path] = { data = data[it.key], mode = is_null(it.mode) and default_mode or it.mode, secret = secret }
    end
  end
  return true
end

-- The files of a volume, or nil, err; false when the volume type is not one
-- czctl writes.
local function volume_files(client, pod, volume)
  local namespace = pod.metadata.namespace
  local files = {}
  -- downwardAPI items with a fieldRef (resourceFieldRef items are left out)
  local function downward(items, mode)
    for _, it in ipairs(is_null(items) and {} or items) do
      if not is_null(it.fieldRef) then
        local value = require("czctl.env").field_value(pod, it.fieldRef.fieldPath)
        if value then files[it.path] = { data = value, mode = is_null(it.mode) and mode or it.mode } end
      end
    end
  end
  if not is_null(volume.configMap) then
    local v = volume.configMap
    local ok, err = source_files(client, namespace, "ConfigMap", v.name, v.items,
                                 is_null(v.defaultMode) and DEFAULT_MODE or v.defaultMode, v.optional, files)
    if not ok then return nil, err end
  elseif not is_null(volume.secret) then
    local v = volume.secret
    local ok, err = source_files(client, namespace, "Secret", v.secretName, v.items,
                                 is_null(v.defaultMode) and DEFAULT_MODE or v.defaultMode, v.optional, files)
    if not ok then return nil, err end
  elseif not is_null(volume.projected) then
    local mode = is_null(volume.projected.defaultMode) and DEFAULT_MODE or volume.projected.defaultMode
    for _, src in ipairs(volume.projected.sources or {}) do
      local ok, err = true, nil
      if not is_null(src.configMap) then
        ok, err = source_files(client, namespace, "ConfigMap", src.configMap.name, src.configMap.items, mode,
                               src.configMap.optional, files)
      elseif not is_null(src.secret) then
        ok, err = source_files(client, namespace, "Secret", src.secret.name, src.secret.items, mode,
                               src.secret.optional, files)
      elseif not is_null(src.downwardAPI) then
        downward(src.downwardAPI.items, mode)
      end -- a serviceAccountToken source is never written: czctl has no token of the pod's
      if not ok then return nil, err end
    end
  elseif not is_null(volume.downwardAPI) then
    downward(volume.downwardAPI.items, is_null(volume.downwardAPI.defaultMode) and DEFAULT_MODE
                                       or volume.downwardAPI.defaultMode)
  else
    return false
  end
  return files
end

--- Write the ConfigMap, Secret and projected volumes of a container of
--- `pod` under `dir`, each at DIR/<mountPath> (honouring subPath).
--- Returns {files, volumes, skipped = {volume names}} or nil, err.
---@param client table czctl.kube client
---@param pod table
---@param container_name string
---@param dir string
---@return {files: integer, volumes: integer, skipped: string[]}|nil
---@return any err
function M.write(client, pod, container_name, dir)
  local container
  for _, c in ipairs(pod.spec.containers or {}) do if c.name == container_name then container = c end end
  if not container then return nil, "no container " .. tostring(container_name) end
  local volumes = {}
  for _, v in ipairs(is_null(pod.spec.volumes) and {} or pod.spec.volumes) do volumes[v.name] = v end
  local mounts = {}
  for _, m in ipairs(is_null(container.volumeMounts) and {} or container.volumeMounts) do mounts[#mounts + 1] = m end
  table.sort(mounts, function(a, b) return #a.mountPath < #b.mountPath end)
  local result = { files = 0, volumes = 0, skipped = {} }
  local ok, merr = sys.mkdir_p(dir, tonumber("700", 8))
  if not ok then return nil, "cannot create " .. dir .. ": " .. tostring(merr) end
  for _, m in ipairs(mounts) do
    local volume = volumes[m.name]
    local files, err = nil, nil
    if volume then files, err = volume_files(client, pod, volume) end
    if files == nil and err then return nil, err end
    if not files then
      result.skipped[#result.skipped + 1] = m.name
    else
      result.volumes = result.volumes + 1
      local sub = (not is_null(m.subPath) and m.subPath ~= "") and m.subPath or nil
      local target = dir .. "/" .. m.mountPath:gsub("^/+", "")
      for path, f in pairs(files) do
        if not safe(path) then return nil, string.format("volume %s has an unsafe path %q", m.name, path) end
        local dest
        if not sub then dest = target .. "/" .. path
        elseif path == sub then dest = target
        elseif path:sub(1, #sub + 1) == sub .. "/" then dest = target .. path:sub(#sub + 1) end
        if dest then
          local parent = dest:match("^(.*)/[^/]*$")
          local pok, perr = sys.mkdir_p(parent, tonumber("700", 8))
          if not pok then return nil, "cannot create " .. parent .. ": " .. tostring(perr) end
          local mode = math.tointeger(f.mode) or DEFAULT_MODE
          if f.secret then mode = mode & tonumber("700", 8) end
          local wok, werr = sys.write_file(dest, f.data, mode)
          if not wok then return nil, "cannot write " .. dest .. ": " .. tostring(werr) end
          result.files = result.files + 1
        end
      end
    end
  end
  return result
end

return M
