"""The one boundary to GeoIP files.

``geoip2`` opens and checks the database and answers one-off questions (``describe``);
the hot path (``lookup``, called for every answer IP) and the enumeration of a country's
networks use ``maxminddb``, the reader ``geoip2`` itself is built on, because ``geoip2``
builds a model object per lookup and cannot list networks.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geoip2.database
import geoip2.errors
import maxminddb

from iptserver.errors import GeoIPError
from iptserver.schema.values import IPAddress, IPNetwork

DEFAULT_DATABASE = Path(os.environ.get("IPTSERVER_GEOIP", "/var/lib/iptserver/country.mmdb"))


def _country_of(record: Any) -> str | None:
    """ISO code from a GeoIP2/GeoLite2/DB-IP Country record, or a flat ``country_code``."""
    if not isinstance(record, dict):
        return None
    for key in ("country", "registered_country"):
        section = record.get(key)
        if isinstance(section, dict):
            iso_code = section.get("iso_code")
            if isinstance(iso_code, str):
                return iso_code
    code = record.get("country_code")
    return code if isinstance(code, str) else None


class GeoIPDatabase:
    """A country database. Implements the policy core's ``GeoLookup``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._geoip2 = geoip2.database.Reader(str(path))
            self._raw = maxminddb.open_database(str(path))
        except FileNotFoundError as e:
            raise GeoIPError(
                f"GeoIP database {path} does not exist; install one with "
                "'iptserver geoip update' or pass --geoip FILE"
            ) from e
        except (OSError, maxminddb.InvalidDatabaseError, ValueError) as e:
            raise GeoIPError(f"cannot open GeoIP database {path}: {e}") from e
        kind = self._geoip2.metadata().database_type
        if "Country" not in kind and "country" not in kind:
            raise GeoIPError(
                f"GeoIP database {path} is a {kind!r} database; iptserver needs a country one"
            )

    @property
    def description(self) -> str:
        meta = self._raw.metadata()
        return f"{self.path} ({meta.database_type}, {meta.node_count} nodes)"

    def lookup(self, ip: IPAddress) -> tuple[str, int] | None:
        try:
            record, prefixlen = self._raw.get_with_prefix_len(ip)
        except (ValueError, maxminddb.InvalidDatabaseError) as e:
            raise GeoIPError(f"GeoIP lookup of {ip} in {self.path} failed: {e}") from e
        country = _country_of(record)
        if country is None:
            return None
        # An IPv4 address in an IPv6 tree comes back with an IPv6 prefix length.
        if ip.version == 4 and prefixlen > 32:
            prefixlen -= 96
        return country, prefixlen

    def describe(self, ip: IPAddress) -> tuple[str, IPNetwork] | None:
        """Country and network of ``ip``, through ``geoip2``'s public model."""
        try:
            response = self._geoip2.country(ip)
        except geoip2.errors.AddressNotFoundError:
            return None
        except (TypeError, ValueError):
            # geoip2 refuses databases whose records are not in MaxMind's layout.
            found = self.lookup(ip)
            if found is None:
                return None
            return found[0], ipaddress.ip_network((ip, found[1]), strict=False)
        code = response.country.iso_code or response.registered_country.iso_code
        network = response.traits.network
        if code is None or network is None:
            return None
        return code, network

    def networks(self, country: str) -> Iterator[IPNetwork]:
        """Every network the database places in ``country``.

        maxminddb yields the IPv4 part of an IPv6 tree as IPv4 networks, once.
        """
        yield from self.networks_of({country}).get(country, [])

    def networks_of(self, countries: set[str]) -> dict[str, list[IPNetwork]]:
        """The networks of several countries, in one pass over the database."""
        found: dict[str, list[IPNetwork]] = {country: [] for country in countries}
        for network, record in self._raw:
            country = _country_of(record)
            if country in found:
                found[country].append(network)
        return found

    def close(self) -> None:
        self._geoip2.close()
        self._raw.close()
