-- GET scenarios (ceiling, users table, search): the URL comes from wrk's command line,
-- the headers from the environment (see report.lua).
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
bench_headers()

function done(summary, latency, requests)
  report(summary, latency, {})
end
