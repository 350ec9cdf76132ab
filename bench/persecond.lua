-- wrk script for the C10K runs: counts the responses completed in each
-- wall-clock second (all threads together) and prints them when wrk ends,
-- one "second <unix time> <responses>" line each; bench/run.py takes the
-- steady-state rate from the seconds after the ramp.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  per_second = {}
end

function response(status, headers, body)
  local now = os.time()
  per_second[now] = (per_second[now] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for second, n in pairs(thread:get("per_second")) do
      total[second] = (total[second] or 0) + n
    end
  end
  local seconds = {}
  for second in pairs(total) do table.insert(seconds, second) end
  table.sort(seconds)
  for _, second in ipairs(seconds) do
    io.write(string.format("second %d %d\n", second, total[second]))
  end
end
