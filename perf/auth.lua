-- wrk script: rotate through the tokens in the file named by TOKENS, one per request, and
-- print a JSON summary (requests/s, latency percentiles, non-2xx count) at the end.
local tokens = {}
local index = 0

init = function(args)
  local path = os.getenv("TOKENS")
  if path then
    -- a line is a token (sent as Bearer) or a whole header value ("Basic ...", as git sends it)
    for line in io.lines(path) do
      tokens[#tokens + 1] = line:sub(1, 6) == "Basic " and line or "Bearer " .. line
    end
  end
  -- start each thread at a different place in the list
  index = math.random(#tokens > 0 and #tokens or 1)
end

request = function()
  local headers = {}
  if #tokens > 0 then
    index = index % #tokens + 1
    headers["Authorization"] = tokens[index]
  end
  headers["X-Forwarded-Method"] = "GET"
  headers["X-Forwarded-Proto"] = "https"
  headers["X-Forwarded-Host"] = "app.example.com"
  headers["X-Forwarded-Uri"] = "/dashboard/reports?page=2"
  return wrk.format("GET", wrk.path, headers)
end

done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, ' ..
    '"p999_ms": %.3f, "non2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    non2xx, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
