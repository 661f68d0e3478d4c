-- wrk script of the peer benchmark (bench/peers_bench.py): every request is a different
-- chat turn, and the run's numbers come back as one JSON line.
--
-- PEERS_TEMPLATE names a file holding the request body with `@@N@@` where the message's
-- number goes (a message re-sent unchanged is a retry Server B answers from its store,
-- never reaching the upstream) and, for Server B, `@@SESSION@@` for the session id.
-- PEERS_POOL, when set, names a file of "session id<TAB>Cookie header" lines: turn n goes
-- to line n mod size, so consecutive turns, those in flight together, are in different
-- sessions of different users. PEERS_AUTH, when set, is sent as the Authorization header.
-- PEERS_TAG starts every message's number, so no two wrk runs send the same message.

local function read(path)
  local file = assert(io.open(path, "rb"))
  local text = file:read("*a")
  file:close()
  return text
end

local function split(text, marker)
  local at = text:find(marker, 1, true)
  if not at then return text, nil end
  return text:sub(1, at - 1), text:sub(at + #marker)
end

local path = os.getenv("PEERS_PATH")
local tag = os.getenv("PEERS_TAG") or "run"
local auth = os.getenv("PEERS_AUTH")
local template = read(assert(os.getenv("PEERS_TEMPLATE"), "PEERS_TEMPLATE is not set"))
-- the body as pieces: text, then a marker's value, then text, ... (markers in any order)
local pieces, kinds = {}, {}
do
  local rest = template
  while true do
    local n_at = rest:find("@@N@@", 1, true)
    local s_at = rest:find("@@SESSION@@", 1, true)
    local at, marker, kind
    if n_at and (not s_at or n_at < s_at) then
      at, marker, kind = n_at, "@@N@@", "n"
    elseif s_at then
      at, marker, kind = s_at, "@@SESSION@@", "session"
    end
    if not at then break end
    local before
    before, rest = split(rest, marker)
    pieces[#pieces + 1] = before
    kinds[#kinds + 1] = kind
  end
  pieces[#pieces + 1] = rest
end

local sessions, cookies = {}, {}
local pool = os.getenv("PEERS_POOL")
if pool and pool ~= "" then
  for line in read(pool):gmatch("[^\n]+") do
    local session, cookie = line:match("^([^\t]*)\t(.*)$")
    sessions[#sessions + 1] = session
    cookies[#cookies + 1] = cookie
  end
end

local counter = 0
local headers = {["Content-Type"] = "application/json"}
if auth and auth ~= "" then headers["Authorization"] = auth end

function request()
  counter = counter + 1
  local slot = #sessions > 0 and (counter % #sessions) + 1 or nil
  local parts = {}
  for i, kind in ipairs(kinds) do
    parts[#parts + 1] = pieces[i]
    if kind == "n" then
      parts[#parts + 1] = tag .. "-" .. counter
    else
      parts[#parts + 1] = sessions[slot]
    end
  end
  parts[#parts + 1] = pieces[#pieces]
  if slot then headers["Cookie"] = cookies[slot] end
  return wrk.format("POST", path, headers, table.concat(parts))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'PEERS_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "mean": %.1f, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
