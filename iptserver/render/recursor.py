"""The PowerDNS Recursor side of the plugin: a recursor.conf snippet and the Lua settings.

Pure functions (text in, text out) so the output is checked against golden files; the
CLI decides where it goes. The recursor loads ``SETTINGS_FILE`` as its lua-dns-script:
it sets the ``IPTSERVER`` table the plugin reads, then runs the plugin itself.

The plugin ships inside the package (``iptserver/recursor_plugin/iptserver.lua``, package
data) so an installed wheel has it: ``dofile()`` needs a file, which a wheel install gives;
a zipped install has none, so the plugin is then rendered next to the settings too.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

# "udp": the recursor's own non-blocking udpQueryResponse to the API's port over UDP
# (iptserver/api/plugin.py); "ffi": the same datagram from the plugin's own socket (LuaJIT
# ffi), which blocks the recursor's worker thread while it waits, as does "http": POST
# /v1/answers from LuaSocket.
Transport = Literal["udp", "http", "ffi"]
TRANSPORTS: tuple[Transport, ...] = ("udp", "http", "ffi")
# Seconds a blocking transport waits for iptserver by default (udp waits the recursor's
# network-timeout instead). ffi: a reply takes well under a millisecond, a few when the
# kernel is busy; the bound only matters when iptserver is stalled (a stopped one
# refuses at once), and then every query queued on the thread waits it in turn, so it
# stays far below a stub resolver's own retry (1 s and more) with a few queued.
DEFAULT_TIMEOUTS: dict[Transport, float] = {"udp": 0.5, "http": 0.5, "ffi": 0.2}

CONF_FILE = "iptserver.conf"  # for the recursor's include-dir (recursor.d)
SETTINGS_FILE = "iptserver-settings.lua"
DEFAULT_DIR = Path("/etc/powerdns/recursor.d")
PLUGIN_FILE = "iptserver.lua"


def packaged_plugin() -> Traversable:
    """The plugin as the package ships it: a real file, unless the package is zipped."""
    return resources.files("iptserver") / "recursor_plugin" / PLUGIN_FILE


# Where the installed package has the plugin (a path inside the zip for a zipped install,
# where render_recursor renders a copy instead).
DEFAULT_PLUGIN = Path(str(packaged_plugin())).resolve()


@dataclass(frozen=True)
class RecursorSettings:
    """What the plugin needs to reach iptserver, and where the files live."""

    api: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]
    plugin: Path = DEFAULT_PLUGIN
    directory: Path = DEFAULT_DIR
    fail_closed: bool = False
    # http, ffi: seconds per answer, the recursor's worker thread waits this long at most;
    # None: the transport's DEFAULT_TIMEOUTS
    timeout: float | None = None
    token_file: Path | None = None
    transport: Transport = "udp"
    # Rules with sources: every answer must reach the plugin with its client, and the
    # packet cache answers repeats without it (the ffi transport's fail-open hook cannot
    # tell the client either).
    per_client: bool = False

    @property
    def wait(self) -> float:
        """The timeout the plugin is given."""
        return DEFAULT_TIMEOUTS[self.transport] if self.timeout is None else self.timeout


def _lua_string(text: str) -> str:
    """A Lua string literal (paths and addresses: no need for more than this)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_settings(settings: RecursorSettings) -> str:
    """The lua-dns-script: the plugin's settings, then the plugin."""
    address, port = settings.api
    token = "nil"
    if settings.token_file is not None:
        token = f"(io.open({_lua_string(str(settings.token_file))}):read('*l'))"
    return (
        "-- Rendered by `iptserver render recursor`: the iptserver plugin's settings.\n"
        "IPTSERVER = {\n"
        f"  host = {_lua_string(str(address))},\n"
        f"  port = {port},\n"
        f"  transport = {_lua_string(settings.transport)},\n"
        f"  timeout = {settings.wait:g},\n"
        f"  fail_closed = {'true' if settings.fail_closed else 'false'},\n"
        f"  token = {token},\n"
        "}\n"
        f"dofile({_lua_string(str(settings.plugin))})\n"
    )


def render_conf(settings: RecursorSettings) -> str:
    """The recursor.conf lines that load the plugin."""
    where = _endpoint(settings.api)
    if settings.transport == "udp":
        how = f"UDP {where}; waits at most network-timeout, parking only the query"
    elif settings.transport == "ffi":
        how = f"UDP {where} (ffi); waits at most {settings.wait:g} s, blocking the thread"
    else:
        how = f"HTTP {where}; waits at most {settings.wait:g} s, blocking the thread"
    return (
        "# Rendered by `iptserver render recursor`: every answer is routed by iptserver\n"
        f"# ({how})\n"
        f"# before it goes out ({'SERVFAIL' if settings.fail_closed else 'answered anyway'}"
        " when it cannot be).\n"
        f"lua-dns-script={settings.directory / SETTINGS_FILE}\n"
        + (
            "# Rules with sources decide per client: no packet cache, which would answer a\n"
            "# repeat without asking the plugin (the record cache still spares the work).\n"
            "disable-packetcache=yes\n"
            if settings.per_client
            else ""
        )
    )


def render_recursor(settings: RecursorSettings) -> dict[str, str]:
    """Every file, by name (to be written in ``settings.directory``); with the packaged
    plugin from a zipped install, the plugin too, since the recursor cannot read a zip."""
    copy = _plugin_copy(settings)
    if copy is not None:
        settings = dataclasses.replace(settings, plugin=settings.directory / PLUGIN_FILE)
    files = {CONF_FILE: render_conf(settings), SETTINGS_FILE: render_settings(settings)}
    if copy is not None:
        files[PLUGIN_FILE] = copy
    return files


def _plugin_copy(settings: RecursorSettings) -> str | None:
    """The packaged plugin's text when it is the one asked for and not a file of its own."""
    if settings.plugin != DEFAULT_PLUGIN:
        return None
    plugin = packaged_plugin()
    if isinstance(plugin, Path):  # a wheel, editable or source install: load it in place
        return None
    return plugin.read_text(encoding="utf-8")


def _endpoint(api: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]) -> str:
    address, port = api
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
