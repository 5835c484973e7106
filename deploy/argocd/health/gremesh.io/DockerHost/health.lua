-- Argo CD health of a DockerHost, from the status the gremesh operator writes
-- (operator/src/controller/status.rs): reachable, and one Ready condition.
--   Healthy      Ready=True (reason Reachable); also while the host has no status yet: a
--                host is contacted only when a mesh that lists it is reconciled, so waiting
--                here would block a sync that creates hosts before meshes forever
--   Degraded     Ready=False (Unreachable, HostKeyMismatch, AuthFailed), with the
--                condition's message (for a key mismatch it carries both fingerprints)
local hs = {}

local status = obj.status
local ready = nil
if status ~= nil and status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" then
      ready = c
    end
  end
end

if ready == nil then
  hs.status = "Healthy"
  hs.message = "Not contacted yet: hosts are contacted when a mesh that lists them is reconciled"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  local docker = ""
  if status.capabilities ~= nil and status.capabilities.dockerVersion ~= nil then
    docker = " (Docker " .. status.capabilities.dockerVersion .. ")"
  end
  hs.message = "Reachable" .. docker
  return hs
end

local message = ready.message
if message == nil or message == "" then
  message = status.message or ""
end
hs.status = "Degraded"
hs.message = (ready.reason or "NotReady") .. ": " .. message
return hs
