-- Argo CD health check for vestige.dev/VestigeMemory (Lua 5.1, as Argo CD's gopher-lua runs it).
-- Reads what the operator writes: status.observedGeneration, status.phase and the kstatus
-- conditions Ready / Reconciling / Stalled. Healthy only when Ready=True for the current
-- generation; Degraded when the operator reports Stalled (or phase Failed/Degraded); Suspended
-- when spec.suspend took effect; Progressing otherwise (also before the operator wrote a status).
local hs = {}

local function condition(status, type_)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function current(c, generation)
  return c ~= nil and (c.observedGeneration == nil or generation == nil or c.observedGeneration >= generation)
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(status, "Ready")
local reconciling = condition(status, "Reconciling")
local stalled = condition(status, "Stalled")
local phase = status.phase or ""

if current(stalled, generation) and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end
if phase == "Failed" or phase == "Degraded" then
  hs.status = "Degraded"
  if ready ~= nil and ready.message ~= nil then
    hs.message = phase .. ": " .. ready.message
  else
    hs.message = phase
  end
  return hs
end
if phase == "Suspended" then
  if current(reconciling, generation) and reconciling.status == "True" then
    hs.status = "Progressing"
    hs.message = "Suspending: " .. (reconciling.message or "")
  else
    hs.status = "Suspended"
    hs.message = "spec.suspend is true: scaled to zero, data kept"
  end
  return hs
end
if current(ready, generation) and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
hs.status = "Progressing"
if current(reconciling, generation) and reconciling.status == "True" and reconciling.message ~= nil then
  hs.message = (phase ~= "" and (phase .. ": ") or "") .. reconciling.message
elseif ready ~= nil and ready.message ~= nil then
  hs.message = (phase ~= "" and (phase .. ": ") or "") .. ready.message
else
  hs.message = "Phase " .. phase
end
return hs
