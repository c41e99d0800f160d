-- Argo CD health check for vestige.dev/VestigeBackup (Lua 5.1, as Argo CD's gopher-lua runs it).
-- Contract (issue 14): status.phase is Pending, Running, Completed or Failed. Completed is
-- Healthy, Failed is Degraded, Pending/Running (and no status yet) are Progressing. A backup
-- of an older generation than the spec is Progressing until the operator observes it.
local hs = {}

local function message(status, fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type == "Ready" and c.message ~= nil and c.message ~= "" then
        return c.message
      end
    end
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to start the backup"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
if phase == "Completed" then
  hs.status = "Healthy"
  hs.message = message(status, "Backup completed")
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message(status, "Backup failed")
elseif phase == "Pending" or phase == "Running" then
  hs.status = "Progressing"
  hs.message = message(status, "Backup " .. string.lower(phase))
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
