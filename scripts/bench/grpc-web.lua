-- wrk script of scripts/bench.sh. It posts one binary grpc-web frame (the
-- file named by BENCH_FRAME) with the key in BENCH_API_KEY, and checks that
-- every response is HTTP 200 with a trailer frame that carries grpc-status 0.

local file = assert(io.open(os.getenv("BENCH_FRAME"), "rb"))
local frame = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = frame
wrk.headers["content-type"] = "application/grpc-web+proto"
wrk.headers["x-grpc-web"] = "1"
wrk.headers["x-api-key"] = os.getenv("BENCH_API_KEY")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

ok = 0
failed = 0
first = ""

-- The status in the body's trailer frame: frames are a flag byte (0x80
-- marks trailers) and a 4-byte big-endian length, then the payload.
local function trailer_status(body)
  local i = 1
  while i + 4 <= #body do
    local flag = body:byte(i)
    local length = body:byte(i + 1) * 16777216 + body:byte(i + 2) * 65536
      + body:byte(i + 3) * 256 + body:byte(i + 4)
    if flag >= 128 then
      return body:sub(i + 5, i + 4 + length):match("grpc%-status:%s*(%d+)")
    end
    i = i + 5 + length
  end
  return nil
end

function response(status, headers, body)
  local code = nil
  if status == 200 then
    -- A trailers-only response carries the status in the headers.
    code = headers["grpc-status"] or trailer_status(body)
  end
  if code == "0" then
    ok = ok + 1
  else
    failed = failed + 1
    if first == "" then
      first = "HTTP " .. status .. ", grpc-status " .. tostring(code)
    end
  end
end

function done(summary, latency, requests)
  local total_ok, total_failed, first_failure = 0, 0, ""
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_failed = total_failed + thread:get("failed")
    if first_failure == "" then
      first_failure = thread:get("first")
    end
  end
  io.write(string.format("grpc-web ok=%d failed=%d first=%s\n", total_ok, total_failed, first_failure))
end
