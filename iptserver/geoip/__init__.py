"""GeoIP: country lookups and country network lists from MaxMind-format databases."""

from iptserver.geoip.reader import DEFAULT_DATABASE, GeoIPDatabase

__all__ = ["DEFAULT_DATABASE", "GeoIPDatabase"]
