-- wrk script for bench/load.sh: a fixed, repeating mix of requests, and the responses
-- counted by kind.
--
-- Environment: LOAD_VALID and LOAD_FORGED (tokens), LOAD_MIX (weights of "valid,forged,
-- none,healthz", default "6,2,1,1": of every 10 requests a thread sends, 6 carry a valid
-- token, 2 a forged one, 1 no Authorization header, all to /api/protected, and 1 is
-- GET /healthz).
--
-- A response with X-Request-Id is an /api/ one (jwtguard sends it on every response to a
-- protected path, /healthz never has it). done() prints one line:
--   counts api=N api_200=N api_401=N api_other=N health=N health_200=N s5xx=N
-- summed over wrk's threads.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local cycle, n

function init(args)
  local valid, forged = os.getenv("LOAD_VALID"), os.getenv("LOAD_FORGED")
  assert(valid and forged, "LOAD_VALID and LOAD_FORGED must be set")
  local weights = {}
  for w in string.gmatch(os.getenv("LOAD_MIX") or "6,2,1,1", "%d+") do
    weights[#weights + 1] = tonumber(w)
  end
  assert(#weights == 4, "LOAD_MIX: four weights, valid,forged,none,healthz")
  local kinds = {
    wrk.format("GET", "/api/protected", { Authorization = "Bearer " .. valid }),
    wrk.format("GET", "/api/protected", { Authorization = "Bearer " .. forged }),
    wrk.format("GET", "/api/protected"),
    wrk.format("GET", "/healthz"),
  }
  cycle = {}
  for k = 1, 4 do
    for _ = 1, weights[k] do
      cycle[#cycle + 1] = kinds[k]
    end
  end
  assert(#cycle > 0, "LOAD_MIX: all weights are 0")
  n = 0
  -- Globals, read by done() through thread:get.
  api, api_200, api_401, api_other, health, health_200, s5xx = 0, 0, 0, 0, 0, 0, 0
end

function request()
  n = n % #cycle + 1
  return cycle[n]
end

function response(status, headers, body)
  if status >= 500 then
    s5xx = s5xx + 1
  end
  if headers["X-Request-Id"] then
    api = api + 1
    if status == 200 then
      api_200 = api_200 + 1
    elseif status == 401 then
      api_401 = api_401 + 1
    else
      api_other = api_other + 1
    end
  else
    health = health + 1
    if status == 200 then
      health_200 = health_200 + 1
    end
  end
end

function done(summary, latency, requests)
  local names = { "api", "api_200", "api_401", "api_other", "health", "health_200", "s5xx" }
  local out = {}
  for _, name in ipairs(names) do
    local total = 0
    for _, thread in ipairs(threads) do
      total = total + thread:get(name)
    end
    out[#out + 1] = name .. "=" .. string.format("%d", total)
  end
  io.write("counts " .. table.concat(out, " ") .. "\n")
end
