-- Runs an Argo CD health script the way Argo CD does: the resource as the global `obj`, only
-- the libraries Argo CD's Lua VM offers (base, table, string, math; no io, os, require,
-- file loading), and the returned table's status and message as the result.
--
--   lua5.1 harness.lua HEALTH_LUA OBJECT_LUA
--
-- OBJECT_LUA is a chunk returning the resource as a Lua table (tests/argocd converts the
-- YAML fixtures). Prints the status on the first line and the message after it.
local script, object = arg[1], arg[2]
local obj = assert(loadfile(object))()

local env = {
  obj = obj,
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
  select = select, tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
  table = table, string = string, math = math,
}
local chunk = assert(loadfile(script))
setfenv(chunk, env)
local ok, hs = pcall(chunk)
if not ok then
  io.stderr:write("health script failed: " .. tostring(hs) .. "\n")
  os.exit(2)
end
if type(hs) ~= "table" or type(hs.status) ~= "string" then
  io.stderr:write("health script returned no table with a status\n")
  os.exit(3)
end
io.write(hs.status, "\n", tostring(hs.message or ""))
