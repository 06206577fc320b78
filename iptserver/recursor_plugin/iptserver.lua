-- iptserver's PowerDNS Recursor plugin (lua-dns-script, recursor 4.8, LuaJIT).
--
-- postresolve: a NOERROR answer holding A/AAAA records (reached from the qname through
-- its CNAME chain) is handed to iptserver before it goes out, so the route exists
-- before the client connects; the answer's TTLs are then capped to the TTL iptserver
-- returns. When iptserver cannot be asked: fail-open (the answer goes out with its TTLs
-- capped to fail_open_ttl, 30 s as iptserver's own proxy does, so that neither the
-- client nor the recursor's packet cache keeps an unrouted answer long; counted and
-- logged) or fail-closed (SERVFAIL).
--
-- Three transports, same routing:
--   "udp" (default): one datagram to the API's port over UDP (iptserver/api/plugin.py
--     has the format), sent by the recursor's own udpQueryResponse follow-up, which
--     parks only this query while it waits (at most the recursor's network-timeout),
--     as for an authority; the worker thread keeps serving other queries.
--   "ffi": the same datagram from a UDP socket of the plugin's own (LuaJIT's ffi calls
--     socket/connect/send/poll/recv; one socket per worker thread, kept open), waiting
--     at most `timeout` seconds for the reply; blocks the worker thread meanwhile (every
--     query it holds), but costs a few system calls where udpQueryResponse costs the
--     recursor a new socket per datagram and a second Lua call. Only for an iptserver
--     without kernel.export_table (or with kernel.export_delay_ms: 0): it holds back
--     each answer that adds a route to the export table export_delay_ms (100 ms by
--     default), and this transport would stall the whole worker thread that long.
--     Fail-open, it hooks postresolve_ffi instead of postresolve (see below).
--   "http": POST /v1/answers over a kept-alive LuaSocket connection, waiting at most
--     `timeout` seconds; the call blocks the worker thread (every query it holds).
--
-- postresolve_ffi (the ffi transport, fail-open): the recursor (4.7 and later) calls it
-- instead of postresolve, with a handle its exported C functions read and change
-- (pdns_postresolve_ffi_handle_*, through LuaJIT's ffi), which spares building the
-- DNSQuestion's record objects and crossing into C++ for each field read. Its limits in
-- recursor 4.8.8, seen in its source and tried:
--   * there is no rcode to read: get_rcode gives the DNSQuestion's rcode, which only a
--     Lua hook run before sets (0 for an NXDOMAIN here), and set_rcode changes nothing
--     the client gets. So no SERVFAIL: with fail_closed the plugin hooks postresolve as
--     before. Only NOERROR is routed all the same: an NXDOMAIN or SERVFAIL answer has no
--     A/AAAA at the end of the qname's CNAME chain, so there is nothing to send.
--   * records are read as text (owner without its trailing dot) and there is no TTL
--     setter (set_record replaces the content only): a TTL is lowered by clearing the
--     records and adding each back (owner, type, TTL, text content, section), in order.
--   * an error raised in the hook costs the client its answer, as in postresolve.
--
-- Settings: the global IPTSERVER table, set by the file `iptserver render recursor`
-- writes (which then loads this one); the defaults below fill what it leaves out.

local cfg = IPTSERVER or {}
local HOST = cfg.host or "127.0.0.1"
local PORT = cfg.port or 8053
local TRANSPORT = cfg.transport or "udp"
-- http: seconds for one whole request, connect included; ffi: for the reply
local TIMEOUT = cfg.timeout or (TRANSPORT == "ffi" and 0.2 or 0.5)
local FAIL_CLOSED = cfg.fail_closed or false
local FAIL_OPEN_TTL = cfg.fail_open_ttl or 30
local TOKEN = cfg.token -- bearer token for the API, or nil
local MAX_CHAIN = 16 -- as the API accepts

-- Debian's lua-socket (LuaSocket), plain TCP; only the http transport needs it.
local socket = TRANSPORT == "http" and require("socket") or nil
local DEST = newCA(HOST:find(":") and ("[" .. HOST .. "]:" .. PORT) or (HOST .. ":" .. PORT))
local TOKEN_LINE = (TOKEN or "") .. "\n"
-- Datagram ids. Each worker thread (each has its own Lua state) counts in a range of its
-- own: the threads' sockets share ports too, and a reply that reached another thread's
-- socket must never pass for that thread's own.
local sent = getRecursorThreadId() * 2^32

local failures = getMetric("iptserver_plugin_failures")
local conn = nil -- one kept-alive connection per worker thread (each has its own Lua state)

-- The request datagram (the udp and ffi transports). `client`: the address that asked
-- (rules with sources apply to some clients); nil where the hook cannot tell.
-- `shared`: the recursor sends it (udpQueryResponse) from a port another of its sockets
-- may have too, so iptserver spaces its replies to that port; the ffi transport's
-- socket is its own.
local function datagram(id, ttl, names, addresses, client, shared)
  return "IPT1 " .. id .. " " .. ttl .. (client and (" from=" .. client) or "")
    .. (shared and " shared" or "") .. "\n" .. TOKEN_LINE
    .. table.concat(names, " ") .. "\n" .. table.concat(addresses, " ") .. "\n"
end

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

-- The ffi transport: a connected, non-blocking UDP socket per worker thread (each thread
-- has its own Lua state), opened at its first answer (again after a failure to open).
-- The constants are Linux's (x86-64 and arm64 alike).
local ffi = TRANSPORT == "ffi" and require("ffi") or nil
local C = ffi and ffi.C
local AF_INET, AF_INET6, SOCK_DGRAM = 2, 10, 2
local SOCK_NONBLOCK, SOCK_CLOEXEC, POLLIN, CLOCK_MONOTONIC = 0x800, 0x80000, 1, 1
local EINTR, EAGAIN, ECONNREFUSED = 4, 11, 111
local REPLY_SIZE = 1024 -- replies are one line, under 500 bytes
-- A reply this late means iptserver holds answers back (kernel.export_table's
-- export_delay_ms) while this thread waits: said once per worker thread.
local SLOW = 0.05
local api, sock, poller, clock, reply, slow_said = nil, nil, nil, nil, nil, false

if ffi then
  ffi.cdef [[
    struct sockaddr_in { uint16_t family; uint16_t port; uint8_t addr[4]; uint8_t zero[8]; };
    struct sockaddr_in6 {
      uint16_t family; uint16_t port; uint32_t flowinfo; uint8_t addr[16]; uint32_t scope;
    };
    struct pollfd { int fd; short events; short revents; };
    struct timespec { long sec; long nsec; };
    int inet_pton(int family, const char *text, void *address);
    uint16_t htons(uint16_t port);
    int socket(int family, int type, int protocol);
    int connect(int fd, const void *address, uint32_t length);
    long send(int fd, const char *data, size_t length, int flags);
    long recv(int fd, char *buffer, size_t length, int flags);
    int poll(struct pollfd *fds, unsigned long count, int milliseconds);
    int clock_gettime(int clock, struct timespec *now);
    int close(int fd);
    char *strerror(int number);

    typedef struct pdns_postresolve_ffi_handle pdns_postresolve_ffi_handle_t;
    typedef struct pdns_ffi_record {
      const char *name; size_t name_len; const char *content; size_t content_len;
      uint32_t ttl; int place; uint16_t type; // place: pdns_record_place_t, an int enum
    } pdns_ffi_record_t;
    const char *pdns_postresolve_ffi_handle_get_qname(pdns_postresolve_ffi_handle_t *handle);
    bool pdns_postresolve_ffi_handle_get_record(pdns_postresolve_ffi_handle_t *handle,
      unsigned int i, pdns_ffi_record_t *record, bool raw);
    void pdns_postresolve_ffi_handle_clear_records(pdns_postresolve_ffi_handle_t *handle);
    bool pdns_postresolve_ffi_handle_add_record(pdns_postresolve_ffi_handle_t *handle,
      const char *name, uint16_t type, uint32_t ttl, const char *content, size_t length,
      int place, bool raw);
  ]]
  local v6 = HOST:find(":") ~= nil
  api = ffi.new(v6 and "struct sockaddr_in6" or "struct sockaddr_in")
  api.family, api.port = v6 and AF_INET6 or AF_INET, C.htons(PORT)
  if C.inet_pton(api.family, HOST, api.addr) ~= 1 then
    error("iptserver plugin: host " .. HOST .. " is not an IP address")
  end
  poller = ffi.new("struct pollfd", { events = POLLIN })
  clock = ffi.new("struct timespec")
  reply = ffi.new("char[?]", REPLY_SIZE)
end

local function os_error(call)
  return call .. ": " .. ffi.string(C.strerror(ffi.errno()))
end

local function now()
  C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.sec) + tonumber(clock.nsec) * 1e-9
end

-- The socket's descriptor in an int[1] that closes it when the Lua state goes (a reload).
local function open()
  local fd = C.socket(api.family, SOCK_DGRAM + SOCK_NONBLOCK + SOCK_CLOEXEC, 0)
  if fd < 0 then return nil, os_error("socket") end
  if C.connect(fd, api, ffi.sizeof(api)) ~= 0 then
    local err = os_error("connect")
    C.close(fd)
    return nil, err
  end
  return ffi.gc(ffi.new("int[1]", fd), function(held) C.close(held[0]) end)
end

local function note_slow(waited)
  if waited < SLOW or slow_said then return end
  slow_said = true
  pdnslog(string.format("iptserver: a reply took %.0f ms, all of it blocking this worker"
    .. " thread (the ffi transport); with kernel.export_table use the udp transport",
    waited * 1000), pdns.loglevels.Warning)
end

-- Send the request datagram `text` and wait up to TIMEOUT for the reply carrying `id`;
-- replies to earlier requests (that timed out) are skipped. The TTL cap, or nil and why.
local function ask(id, text)
  if not sock then
    local err
    sock, err = open()
    if not sock then return nil, err end
  end
  local fd = sock[0]
  -- An ICMP "port unreachable" for an earlier datagram fails the next send once.
  if C.send(fd, text, #text, 0) < 0
    and (ffi.errno() ~= ECONNREFUSED or C.send(fd, text, #text, 0) < 0) then
    return nil, os_error("send")
  end
  local sent_at = now()
  local deadline = sent_at + TIMEOUT
  poller.fd = fd
  while true do
    local left = deadline - now()
    if left <= 0 then
      return nil, "no reply from iptserver within " .. TIMEOUT .. " s (timeout)"
    end
    local ready = C.poll(poller, 1, math.ceil(left * 1000))
    if ready < 0 and ffi.errno() ~= EINTR then return nil, os_error("poll") end
    local got = ready > 0 and tonumber(C.recv(fd, reply, REPLY_SIZE, 0)) or -1
    if got >= 0 then
      local answer = ffi.string(reply, got)
      local for_id, result = answer:match("^IPT1 (%S+) ([^\n]*)")
      if not for_id then return nil, "unexpected reply " .. answer:sub(1, 200) end
      if for_id == id or for_id == "-" then -- "-": iptserver could not read the id
        local cap = tonumber(result:match("^%d+$"))
        note_slow(now() - sent_at)
        if cap then return cap end
        return nil, result
      end
    elseif ready > 0 then
      local errno = ffi.errno()
      if errno == ECONNREFUSED then
        return nil, "connection refused: nothing listens on UDP " .. HOST .. " port " .. PORT
      end
      if errno ~= EAGAIN and errno ~= EINTR then return nil, os_error("recv") end
    end
  end
end

local A, AAAA, CNAME = pdns.A, pdns.AAAA, pdns.CNAME

-- The answer records for qname and its CNAME chain: the names (qname first), the A/AAAA
-- addresses as text, their smallest TTL, and the largest TTL in the answer section.
-- Each record's fields are read once (every read crosses into the recursor's C++).
local function walk(dq, records)
  local owners, types, found, longest = {}, {}, {}, 0
  for _, dr in ipairs(records) do
    if dr.place == 1 then
      local ttl, kind = dr.ttl, dr.type
      if ttl > longest then longest = ttl end
      if kind == A or kind == AAAA or kind == CNAME then
        found[#found + 1], owners[#found + 1], types[#found + 1] = dr, dr.name, kind
      end
    end
  end
  local name = dq.qname
  local names, addresses, shortest = { name:toString() }, {}, nil
  for _ = 1, MAX_CHAIN do
    local target = nil
    for i = 1, #found do
      if owners[i] == name then
        local dr = found[i]
        if types[i] ~= CNAME then
          addresses[#addresses + 1] = dr:getContent()
          local ttl = dr.ttl
          if not shortest or ttl < shortest then shortest = ttl end
        elseif not target then
          target = newDN(dr:getContent())
        end
      end
    end
    if not target then break end
    name = target
    names[#names + 1] = target:toString()
  end
  return names, addresses, shortest, longest
end

local function quote_all(list, first)
  local quoted = {}
  for i = first, #list do quoted[#quoted + 1] = quote(list[i]) end
  return table.concat(quoted, ",")
end

-- Count and log an answer iptserver could not be asked about.
local function not_routed(qname, why)
  failures:inc()
  pdnslog("iptserver: " .. qname .. " not routed (" .. why .. ")"
    .. (FAIL_CLOSED and ", SERVFAIL" or (", answered with TTLs of at most " .. FAIL_OPEN_TTL
    .. " s")), pdns.loglevels.Warning)
end

-- Lower the answer section's TTLs to ``cap``; false (leave the answer alone) when none
-- is above it, which spares copying the records back.
local function cap_ttls(dq, records, cap, longest)
  if longest <= cap then return false end
  records = records or dq:getRecords()
  for _, dr in ipairs(records) do
    if dr.place == 1 and dr.ttl > cap then dr.ttl = cap end
  end
  dq:setRecords(records)
  return true
end

-- iptserver could not be asked: SERVFAIL, or the answer with short TTLs.
local function failed(dq, why, records, longest)
  not_routed(dq.qname:toString(), why)
  if not FAIL_CLOSED then return cap_ttls(dq, records, FAIL_OPEN_TTL, longest) end
  dq.rcode = pdns.SERVFAIL
  dq:setRecords({})
  return true
end

-- The udpQueryResponse callback (called by name): iptserver's reply is in dq.udpAnswer,
-- empty when none came (refused, or nothing within network-timeout).
--
-- The recursor sends each datagram from a new socket, bound with SO_REUSEADDR: two
-- queries in flight can get the same port, and then one the other's reply. The id
-- catches that; the datagram is sent once more (from a new socket), then it fails.
function iptserver_udp_reply(dq)
  local state, answer = dq.data, dq.udpAnswer
  local id, result = answer:match("^IPT1 (%S+) ([^\n]*)")
  local mine = state.id
  if id and id ~= mine and not state.resent then
    state.resent = true
    return true -- followupFunction is still udpQueryResponse: the recursor sends again
  end
  dq.followupFunction = "" -- done: else the recursor sends the datagram again
  local cap = id == mine and tonumber(result:match("^%d+$"))
  local longest = state.longest
  if cap then return cap_ttls(dq, nil, cap, longest) end
  if answer == "" then
    local why = "no reply from iptserver (down, or slower than network-timeout)"
    return failed(dq, why, nil, longest)
  end
  if id and id ~= mine then
    local why = "replies to other requests (" .. id .. ") came for request " .. mine
    return failed(dq, why, nil, longest)
  end
  return failed(dq, id and result or ("unexpected reply " .. answer:sub(1, 200)), nil, longest)
end

-- postresolve_ffi's records, read into an array of the plugin's own (one per worker
-- thread, grown as needed); their names and contents stay the recursor's, valid while
-- the hook runs.
local RECORD = "pdns_ffi_record_t[?]"
local ANSWER = 1 -- pdns_record_place_answer
local held, room = nil, 0

local function read_records(handle)
  local count = 0
  while true do
    if count == room then
      local bigger = ffi.new(RECORD, math.max(2 * room, 32))
      if held then ffi.copy(bigger, held, room * ffi.sizeof("pdns_ffi_record_t")) end
      held, room = bigger, math.max(2 * room, 32)
    end
    if not C.pdns_postresolve_ffi_handle_get_record(handle, count, held + count, false) then
      return count
    end
    count = count + 1
  end
end

-- walk() over the handle's records: the same names (qname first, with trailing dots, as
-- postresolve sends them), addresses, smallest and largest TTL. Owners compare as
-- DNSNames do, without case.
local function walk_handle(qname, count)
  local owners, kinds, at, longest = {}, {}, {}, 0
  for i = 0, count - 1 do
    local record = held[i]
    if record.place == ANSWER then
      local ttl, kind = record.ttl, record.type
      if ttl > longest then longest = ttl end
      if kind == A or kind == AAAA or kind == CNAME then
        local n = #at + 1
        at[n], kinds[n], owners[n] = i, kind, ffi.string(record.name, record.name_len):lower()
      end
    end
  end
  local name = qname:lower()
  local names, addresses, shortest = { qname .. "." }, {}, nil
  for _ = 1, MAX_CHAIN do
    local target = nil
    for n = 1, #at do
      if owners[n] == name then
        local record = held[at[n]]
        if kinds[n] ~= CNAME then
          addresses[#addresses + 1] = ffi.string(record.content, record.content_len)
          if not shortest or record.ttl < shortest then shortest = record.ttl end
        elseif not target then
          target = ffi.string(record.content, record.content_len) -- "name." (presentation)
        end
      end
    end
    if not target then break end
    names[#names + 1] = target
    name = target:lower():gsub("%.$", "")
  end
  return names, addresses, shortest, longest
end

-- cap_ttls() for the handle: no TTL setter, so every record is added back in order, the
-- answer section's TTLs lowered to cap.
local function cap_handle(handle, count, cap, longest)
  if longest <= cap then return false end
  C.pdns_postresolve_ffi_handle_clear_records(handle)
  for i = 0, count - 1 do
    local r = held[i]
    local ttl = (r.place == ANSWER and r.ttl > cap) and cap or r.ttl
    if not C.pdns_postresolve_ffi_handle_add_record(handle, r.name, r.type, ttl, r.content,
      r.content_len, r.place, false) then
      pdnslog("iptserver: could not add back " .. ffi.string(r.name, r.name_len) .. " type "
        .. r.type .. " after capping its TTL (the recursor logged why); the answer lacks it",
        pdns.loglevels.Error)
    end
  end
  return true
end

local function postresolve_handle(handle)
  local count = read_records(handle)
  if count == 0 then return false end
  local qname = ffi.string(C.pdns_postresolve_ffi_handle_get_qname(handle))
  if qname == "." then qname = "" end -- the root: names[1] becomes "."
  local names, addresses, ttl, longest = walk_handle(qname, count)
  if #addresses == 0 then return false end
  sent = sent + 1
  local id = tostring(sent)
  local cap, err = ask(id, datagram(id, ttl, names, addresses))
  if not cap then
    not_routed(names[1], err)
    cap = FAIL_OPEN_TTL -- fail-open: fail-closed uses postresolve
  end
  return cap_handle(handle, count, cap, longest)
end

function postresolve(dq)
  if dq.rcode ~= pdns.NOERROR then return false end
  local records = dq:getRecords()
  local names, addresses, ttl, longest = walk(dq, records)
  if #addresses == 0 then return false end
  local client = dq.remoteaddr:toString()
  if TRANSPORT == "udp" then
    sent = sent + 1
    local id = tostring(sent)
    dq.data = { id = id, longest = longest, resent = false } -- for the callback
    dq.udpQueryDest = DEST
    dq.udpQuery = datagram(id, ttl, names, addresses, client, true)
    dq.udpCallback = "iptserver_udp_reply"
    dq.followupFunction = "udpQueryResponse"
    return true
  end
  if TRANSPORT == "ffi" then
    sent = sent + 1
    local id = tostring(sent)
    local cap, err = ask(id, datagram(id, ttl, names, addresses, client))
    if not cap then return failed(dq, err, records, longest) end
    return cap_ttls(dq, records, cap, longest)
  end
  local body = '{"qname":' .. quote(names[1]) .. ',"chain":[' .. quote_all(names, 2)
    .. '],"addresses":[' .. quote_all(addresses, 1) .. '],"ttl":' .. ttl
    .. ',"client":' .. quote(client) .. '}'
  local reply, err = post(body)
  local cap = reply and tonumber(reply:match('"ttl"%s*:%s*(%d+)'))
  if not cap then return failed(dq, err or ("unexpected reply " .. reply), records, longest) end
  return cap_ttls(dq, records, cap, longest)
end

-- The ffi transport, fail-open: the recursor calls postresolve_ffi instead of postresolve
-- (4.8.8 calls postresolve only when no postresolve_ffi is defined).
if TRANSPORT == "ffi" and not FAIL_CLOSED then
  postresolve_ffi = postresolve_handle
end
