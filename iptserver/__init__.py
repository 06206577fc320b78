"""iptserver: a DNS-driven policy router for a WireGuard VPN entrypoint."""

__version__ = "0.1.0"
