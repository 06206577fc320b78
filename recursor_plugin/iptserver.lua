-- iptserver's PowerDNS Recursor plugin (lua-dns-script, recursor 4.8, LuaJIT).
--
-- postresolve: a NOERROR answer holding A/AAAA records (reached from the qname through
-- its CNAME chain) is POSTed to iptserver's /v1/answers before it goes out, so the
-- route exists before the client connects; the answer's TTLs are then capped to the
-- "ttl" iptserver returns. When iptserver cannot be asked: fail-open (the answer goes
-- out as it is, counted and logged) or fail-closed (SERVFAIL).
--
-- Settings: the global IPTSERVER table, set by the file `iptserver render recursor`
-- writes (which then loads this one); the defaults below fill what it leaves out.

local socket = require("socket") -- Debian's lua-socket (LuaSocket), plain TCP only

local cfg = IPTSERVER or {}
local HOST = cfg.host or "127.0.0.1"
local PORT = cfg.port or 8053
local TIMEOUT = cfg.timeout or 0.5 -- seconds for one whole request, connect included
local FAIL_CLOSED = cfg.fail_closed or false
local TOKEN = cfg.token -- bearer token for the API, or nil
local MAX_CHAIN = 16 -- as the API accepts

local failures = getMetric("iptserver_plugin_failures")
local conn = nil -- one kept-alive connection per worker thread (each has its own Lua state)

-- JSON string: DNSName:toString() already escapes odd bytes as \DDD; quote the rest.
local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

local function request_text(body)
  local auth = TOKEN and ("Authorization: Bearer " .. TOKEN .. "\r\n") or ""
  return "POST /v1/answers HTTP/1.1\r\nHost: " .. HOST .. "\r\n" .. auth
    .. "Content-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end

-- One HTTP/1.1 exchange on conn, all of it before `deadline`: the response body, or nil.
local function exchange(text, deadline)
  local function left() conn:settimeout(math.max(deadline - socket.gettime(), 0.001)) end
  left()
  if not conn:send(text) then return nil, "send failed" end
  left()
  local status = conn:receive("*l")
  if not status then return nil, "no response" end
  local length, close = 0, false
  while true do
    left()
    local line = conn:receive("*l")
    if not line then return nil, "headers cut short" end
    if line == "" then break end
    local key, value = line:match("^([^:]+):%s*(.*)$")
    key = key and key:lower()
    if key == "content-length" then length = tonumber(value) or 0 end
    if key == "connection" and value:lower() == "close" then close = true end
  end
  left()
  local body = length > 0 and conn:receive(length) or ""
  if not body then return nil, "body cut short" end
  if close then conn:close(); conn = nil end
  local code = tonumber(status:match("^HTTP/%d%.%d (%d+)"))
  if code ~= 200 then return nil, "HTTP " .. tostring(code) .. " " .. body end
  return body
end

-- POST an answer; a kept-alive connection the server closed meanwhile is retried once.
local function post(body)
  local deadline = socket.gettime() + TIMEOUT
  local text = request_text(body)
  for _ = 1, 2 do
    local reused = conn ~= nil
    if not reused then
      conn = HOST:find(":") and socket.tcp6() or socket.tcp()
      conn:settimeout(TIMEOUT)
      local ok, err = conn:connect(HOST, PORT)
      if not ok then conn:close(); conn = nil; return nil, "connect: " .. err end
    end
    local reply, err = exchange(text, deadline)
    if reply then return reply end
    if conn then conn:close(); conn = nil end
    if not reused or socket.gettime() >= deadline then return nil, err end
  end
end

-- The answer records for qname and its CNAME chain: chain names and A/AAAA addresses.
local function walk(dq, records)
  local name, chain, addresses, ttl = dq.qname, {}, {}, nil
  for _ = 1, MAX_CHAIN do
    local target = nil
    for _, dr in ipairs(records) do
      if dr.place == 1 and dr.name:equal(name:toString()) then
        if dr.type == pdns.A or dr.type == pdns.AAAA then
          addresses[#addresses + 1] = quote(dr:getContent())
          ttl = math.min(ttl or dr.ttl, dr.ttl)
        elseif dr.type == pdns.CNAME and not target then
          target = newDN(dr:getContent())
        end
      end
    end
    if not target then break end
    name = target
    chain[#chain + 1] = quote(target:toString())
  end
  return chain, addresses, ttl
end

local function failed(dq, why)
  failures:inc()
  pdnslog("iptserver: " .. dq.qname:toString() .. " not routed (" .. why .. ")"
    .. (FAIL_CLOSED and ", SERVFAIL" or ", answered anyway"), pdns.loglevels.Warning)
  if not FAIL_CLOSED then return false end
  dq.rcode = pdns.SERVFAIL
  dq:setRecords({})
  return true
end

function postresolve(dq)
  if dq.rcode ~= pdns.NOERROR then return false end
  local records = dq:getRecords()
  local chain, addresses, ttl = walk(dq, records)
  if #addresses == 0 then return false end
  local body = '{"qname":' .. quote(dq.qname:toString()) .. ',"chain":[' .. table.concat(chain, ",")
    .. '],"addresses":[' .. table.concat(addresses, ",") .. '],"ttl":' .. ttl .. '}'
  local reply, err = post(body)
  local cap = reply and tonumber(reply:match('"ttl"%s*:%s*(%d+)'))
  if not cap then return failed(dq, err or ("unexpected reply " .. reply)) end
  for _, dr in ipairs(records) do
    if dr.place == 1 and dr.ttl > cap then dr.ttl = cap end
  end
  dq:setRecords(records)
  return true
end
