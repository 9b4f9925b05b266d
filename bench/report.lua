-- Shared by the wrk scripts: writes wrk's summary as one JSON object to $BENCH_OUT.
function report(summary, latency, extra)
  local e = summary.errors
  local f = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  f:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
    summary.requests, summary.duration, summary.bytes, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
  for name, value in pairs(extra or {}) do
    f:write(string.format(',"%s":%d', name, value))
  end
  f:write("}\n")
  f:close()
end

-- The headers every scenario sends: the session cookie (when signed in), htmx's headers
-- (when asking for a fragment) and the CSRF header htmx adds from the page.
function bench_headers()
  local cookie = os.getenv("BENCH_COOKIE") or ""
  if cookie ~= "" then wrk.headers["Cookie"] = cookie end
  local csrf = os.getenv("BENCH_CSRF") or ""
  if csrf ~= "" then wrk.headers["X-CSRF-Token"] = csrf end
  local target = os.getenv("BENCH_HX_TARGET") or ""
  if target ~= "" then
    wrk.headers["HX-Request"] = "true"
    wrk.headers["HX-Target"] = target
  end
  local encoding = os.getenv("BENCH_ACCEPT_ENCODING") or ""
  if encoding ~= "" then wrk.headers["Accept-Encoding"] = encoding end
end
