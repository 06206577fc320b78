"""``iptserver run``: the dataplane, the DNS proxy, the API and exit health, composed."""

from iptserver.daemon.options import Options
from iptserver.daemon.service import Daemon

__all__ = ["Daemon", "Options"]
