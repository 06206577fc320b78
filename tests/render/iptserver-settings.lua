-- Rendered by `iptserver render recursor`: the iptserver plugin's settings.
IPTSERVER = {
  host = "127.0.0.1",
  port = 8053,
  transport = "udp",
  timeout = 0.5,
  fail_closed = true,
  token = nil,
}
dofile("/usr/share/iptserver/iptserver.lua")
