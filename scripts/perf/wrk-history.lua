-- wrk -s wrk-history.lua: reads of one account's history at random places (see history.sh).
-- MODE (statement | as_of_seq | as_of), TOKEN, ACCOUNT, FIRST_SEQ, LAST_SEQ, FIRST_MS, LAST_MS
-- come from the environment. The account is the hot workload's merchant: every charge event of
-- the load is one of its postings, the charge's credit (leg 1), so any seq in the span names one.
local mode = os.getenv("MODE")
local token = os.getenv("TOKEN")
local account = os.getenv("ACCOUNT")
local first_seq, last_seq = tonumber(os.getenv("FIRST_SEQ")), tonumber(os.getenv("LAST_SEQ"))
local first_ms, last_ms = tonumber(os.getenv("FIRST_MS")), tonumber(os.getenv("LAST_MS"))
local headers = {["Authorization"] = "Bearer " .. token}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) math.randomseed(os.time()) end
local function rfc3339(ms)
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(ms / 1000)) .. string.format(".%03dZ", ms % 1000)
end
function request()
  local path
  if mode == "statement" then
    local order = math.random(0, 1) == 0 and "asc" or "desc"
    local seq = math.random(first_seq, last_seq)
    path = string.format("/v1/accounts/%s/postings?limit=100&order=%s&starting_after=po_%016x01",
      account, order, seq)
  elseif mode == "as_of_seq" then
    path = string.format("/v1/accounts/%s/balance?as_of_seq=%d", account,
      math.random(first_seq - 1, last_seq + 1))
  else
    path = string.format("/v1/accounts/%s/balance?as_of=%s", account,
      rfc3339(math.random(first_ms - 1, last_ms + 1)))
  end
  return wrk.format("GET", path, headers)
end
other = 0
function response(status, headers, body) if status ~= 200 then other = other + 1 end end
function done(summary, latency, requests)
  io.write(string.format("p50 %.3f ms p90 %.3f ms p99 %.3f ms max %.3f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("other") end
  io.write(string.format("non-200 answers: %d\n", total))
end
