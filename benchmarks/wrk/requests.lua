-- wrk script of benchmarks/jobs_vs_prd.py: requests from a list the driver writes, in turn.
--
--   wrk -t2 -c16 -d10s -s benchmarks/wrk/requests.lua http://127.0.0.1:8000 -- /tmp/cell.lua
--
-- The data file (the argument after --) sets `items`, a list of {method, path, token, body}
-- (body nil for a GET): one per user, so the requests go round-robin over the users; each wrk
-- thread starts at its own place in the list. Each response other than 2xx is counted, and
-- done() prints one line "WRK_JSON {...}" (requests, duration, latency percentiles in
-- microseconds, socket errors, non-2xx responses and the first such status).

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   dofile(args[1])
   prepared = {}
   for i, item in ipairs(items) do
      local headers = {["Authorization"] = "Bearer " .. item.token}
      if item.body then
         headers["Content-Type"] = "application/json"
      end
      prepared[i] = wrk.format(item.method, item.path, headers, item.body)
   end
   -- spread the threads over the list (id is set by setup before init runs)
   index = ((id or 0) * math.floor(#prepared / 7 + 1)) % #prepared
   non2xx = 0
   first_non2xx = 0
end

function request()
   index = index % #prepared + 1
   return prepared[index]
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if first_non2xx == 0 then
         first_non2xx = status
      end
   end
end

function done(summary, latency, requests)
   local bad, first = 0, 0
   for _, thread in ipairs(threads) do
      bad = bad + thread:get("non2xx")
      local status = thread:get("first_non2xx")
      if first == 0 and status ~= 0 then
         first = status
      end
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
         .. '"max_us": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, '
         .. '"timeouts": %d, "non2xx": %d, "first_non2xx": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout, bad, first))
end
