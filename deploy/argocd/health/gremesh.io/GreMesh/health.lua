-- Argo CD health of a GreMesh, from the status the gremesh operator writes
-- (operator/src/controller/status.rs): conditions Ready, Progressing and Degraded, and per
-- host whether it converged.
--   Progressing  until the status describes the current generation and every host converged
--   Degraded     Degraded=True (or Ready=False for a reason other than Converging), with its
--                message, which names the host and the cause
--   Healthy      Ready=True
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function explain(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the gremesh operator to reconcile the mesh"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the gremesh operator to apply generation " .. obj.metadata.generation
  return hs
end

local ready = condition(status, "Ready")
local degraded = condition(status, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = explain(degraded, "Degraded")
  return hs
end
if ready ~= nil and ready.status == "False" and ready.reason ~= nil and ready.reason ~= ""
    and ready.reason ~= "Converging" then
  hs.status = "Degraded"
  hs.message = explain(ready, "Not ready")
  return hs
end

if ready ~= nil and ready.status == "True" then
  local waiting = {}
  for _, h in ipairs(status.hosts or {}) do
    if not h.ready then
      table.insert(waiting, h.name)
    end
  end
  if #waiting == 0 then
    hs.status = "Healthy"
    hs.message = "Every host converged (" .. (status.hostsReady or "all hosts") .. ")"
    return hs
  end
  hs.status = "Progressing"
  hs.message = "Waiting for " .. table.concat(waiting, ", ")
  return hs
end

hs.status = "Progressing"
hs.message = explain(condition(status, "Progressing"), explain(ready, "Converging"))
return hs
