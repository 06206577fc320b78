"""GeoIP: country lookups and country network lists from MaxMind-format databases."""

from __future__ import annotations

from pathlib import Path

from iptserver.geoip.reader import DEFAULT_DATABASE, GeoIPDatabase

__all__ = ["DEFAULT_DATABASE", "GeoIPDatabase", "open_geoip"]


def open_geoip(path: Path | None) -> GeoIPDatabase | None:
    """The database ``path`` names, else the default one if installed, else None.

    One rule for ``run`` and ``explain``: a path the operator gave must open (a
    :class:`~iptserver.errors.GeoIPError` if not); the default is only used when present,
    so that a schema without country rules needs no database.
    """
    if path is not None:
        return GeoIPDatabase(path)
    if DEFAULT_DATABASE.exists():
        return GeoIPDatabase(DEFAULT_DATABASE)
    return None
