-- Argo CD health of a ContainerAttachment, from the status the gremesh operator writes
-- (operator/src/controller/status.rs): one Ready condition.
--   Progressing  until the status describes the current generation; while Ready=False with
--                reason Converging (the mesh pass has not attached it yet). An attachment
--                whose mesh does not exist gets no status, so it stays Progressing.
--   Degraded     Ready=False for any other reason (ContainerNotRunning, ContainerMissing,
--                Conflict, Rejected, MeshRejected, HostUnreachable, HostFailed, ...), with
--                the condition's message
--   Healthy      Ready=True (reason Attached)
local hs = {}

local status = obj.status
if status == nil or status.observedGeneration == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the gremesh operator to attach the container"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the gremesh operator to apply generation " .. obj.metadata.generation
  return hs
end

local ready = nil
for _, c in ipairs(status.conditions) do
  if c.type == "Ready" then
    ready = c
  end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the gremesh operator to attach the container"
  return hs
end

local message = ready.message
if message == nil or message == "" then
  message = ready.reason or ""
end
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.reason == nil or ready.reason == "" or ready.reason == "Converging" then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
  message = ready.reason .. ": " .. message
end
hs.message = message
return hs
