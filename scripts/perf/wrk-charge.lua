-- wrk -s wrk-charge.lua: fresh random idempotency key per request, random customer -> merchant.
-- RUN and TOKEN come from the environment (the run id of a prior `onceledger bench` setup).
local run = os.getenv("RUN")
local token = os.getenv("TOKEN")
local counter = 0
function setup(thread) thread:set("tid", math.random(1, 1e9)) end
function init(args) math.randomseed(os.time() + tid) end
function request()
  counter = counter + 1
  local key = string.format("w-%d-%d-%d", tid, counter, math.random(1, 2^31))
  local body = string.format('{"source":"%s-c%d","destination":"%s-m%d","amount":1,"currency":"EUR"}',
    run, math.random(0, 8999), run, math.random(0, 999))
  return wrk.format("POST", "/v1/charges", {["Content-Type"]="application/json",
    ["Idempotency-Key"]=key, ["Authorization"]="Bearer " .. token}, body)
end
local statuses = {}
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  io.write(string.format("p50 %.3f ms p99 %.3f ms\n", latency:percentile(50)/1000, latency:percentile(99)/1000))
end
