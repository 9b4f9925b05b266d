-- The inline save: POST /users/<id> over many rows, with versions kept valid.
--
-- $BENCH_IDS names a file of "id version" lines: active Customers, spread over the table.
-- wrk thread k of n owns the lines whose index is k-1 modulo n, so no two threads ever
-- save the same row. A thread sends at most one request per row at a time (the row is
-- busy until its answer comes back). Each save renames the row to bench<id>v<new version>,
-- so every save is a real change. The answer says which row it was about (id="user-<id>"):
-- 200 means the save went through and the row is now at version+1; 409 means the version
-- was stale, and the conflict form carries the current one, which the next save uses.
-- A 409 counts as a failed save. No Accept-Encoding: the script reads the answers.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
bench_headers()
wrk.method = "POST"
wrk.headers["HX-Request"] = "true"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local threads = {}
local created = 0

function setup(thread)
  created = created + 1
  thread:set("thread_number", created)
  table.insert(threads, thread)
end

function init(args)
  local count = tonumber(os.getenv("BENCH_THREADS"))
  csrf = os.getenv("BENCH_CSRF")
  rows, versions, busy = {}, {}, {}
  local index = 0
  for line in io.lines(os.getenv("BENCH_IDS")) do
    local id, version = line:match("(%d+) (%d+)")
    if index % count == thread_number - 1 then
      id = tonumber(id)
      table.insert(rows, id)
      versions[id] = tonumber(version)
    end
    index = index + 1
  end
  position = 0
  saved, conflicts, other = 0, 0, 0
end

function request()
  local id
  for _ = 1, #rows do
    position = position % #rows + 1
    id = rows[position]
    if not busy[id] then break end
  end
  busy[id] = true
  local version = versions[id]
  local body = "csrf_token=" .. csrf .. "&version=" .. version ..
    "&username=bench" .. id .. "v" .. (version + 1) .. "&email=bench" .. id .. "%40example.com" ..
    "&role=Customer&active=1&back=%2Fusers"
  wrk.headers["HX-Target"] = "user-" .. id
  return wrk.format(nil, "/users/" .. id, nil, body)
end

function response(status, headers, body)
  local id = tonumber(body:match('id="user%-(%d+)"') or "")
  if id == nil or versions[id] == nil then
    other = other + 1
    return
  end
  busy[id] = nil
  if status == 200 then
    versions[id] = versions[id] + 1
    saved = saved + 1
  elseif status == 409 then
    versions[id] = tonumber(body:match('name="version" value="(%d+)"')) or versions[id]
    conflicts = conflicts + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local totals = {saved = 0, conflicts = 0, other = 0}
  for _, thread in ipairs(threads) do
    for name in pairs(totals) do totals[name] = totals[name] + thread:get(name) end
  end
  report(summary, latency, totals)
end
