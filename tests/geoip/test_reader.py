"""The GeoIP boundary, on the lab database and on the installed production database."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from iptserver.errors import GeoIPError
from iptserver.geoip import DEFAULT_DATABASE, GeoIPDatabase
from iptserver.lab.addresses import LAB_COUNTRIES, LAB_UNPLACED

LAB_LOOKUPS = [
    ("198.51.100.1", "GB", "198.51.100.0/26"),
    ("198.51.100.70", "RU", "198.51.100.64/26"),
    ("198.51.100.130", "US", "198.51.100.128/26"),
    ("198.51.100.255", "DE", "198.51.100.192/26"),
    ("2001:db8:7::1", "RU", "2001:db8:7::/48"),
    ("2001:db8:44:1::9", "GB", "2001:db8:44::/48"),
]


@pytest.mark.parametrize(("ip", "country", "network"), LAB_LOOKUPS, ids=[c[0] for c in LAB_LOOKUPS])
def test_lab_lookup_gives_country_and_network(
    lab_geoip: GeoIPDatabase, ip: str, country: str, network: str
) -> None:
    address = ipaddress.ip_address(ip)
    prefix = ipaddress.ip_network(network).prefixlen
    assert lab_geoip.lookup(address) == (country, prefix)
    assert lab_geoip.describe(address) == (country, ipaddress.ip_network(network))


@pytest.mark.parametrize("ip", ["203.0.113.5", "2001:db8:ff::1", "10.0.0.1", "192.0.2.1"])
def test_unplaced_addresses_have_no_country(lab_geoip: GeoIPDatabase, ip: str) -> None:
    assert lab_geoip.lookup(ipaddress.ip_address(ip)) is None
    assert lab_geoip.describe(ipaddress.ip_address(ip)) is None


@pytest.mark.parametrize("country", sorted(LAB_COUNTRIES))
def test_networks_of_a_country_are_listed_from_the_database(
    lab_geoip: GeoIPDatabase, country: str
) -> None:
    assert sorted(map(str, lab_geoip.networks(country))) == sorted(map(str, LAB_COUNTRIES[country]))


def test_unplaced_ranges_are_in_no_country(lab_geoip: GeoIPDatabase) -> None:
    listed = {net for country in LAB_COUNTRIES for net in lab_geoip.networks(country)}
    assert not any(
        net.overlaps(unplaced)
        for net in listed
        for unplaced in LAB_UNPLACED
        if net.version == unplaced.version
    )


def test_missing_database_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(
        GeoIPError, match="does not exist; install one with 'iptserver geoip update'"
    ):
        GeoIPDatabase(tmp_path / "nope.mmdb")


def test_garbage_file_is_rejected_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"this is not a MaxMind database" * 10)
    with pytest.raises(GeoIPError, match=f"cannot open GeoIP database {bad}"):
        GeoIPDatabase(bad)


# The production database installed by `make setup` (CC0 geo-whois-asn-country). These
# addresses have belonged to the same countries for many years.
PRODUCTION_LOOKUPS = [
    ("8.8.8.8", "US"),  # Google Public DNS
    ("77.88.8.8", "RU"),  # Yandex DNS
    ("212.58.224.1", "GB"),  # BBC
    ("2a02:6b8::1", "RU"),  # Yandex
    ("2001:4860:4860::8888", "US"),  # Google Public DNS
]


@pytest.fixture(scope="module")
def production() -> GeoIPDatabase:
    # Installed by the README's set-up; a missing database is a failed set-up, not a skip.
    return GeoIPDatabase(DEFAULT_DATABASE)


@pytest.mark.parametrize(
    ("ip", "country"), PRODUCTION_LOOKUPS, ids=[c[0] for c in PRODUCTION_LOOKUPS]
)
def test_production_database_places_well_known_addresses(
    production: GeoIPDatabase, ip: str, country: str
) -> None:
    found = production.lookup(ipaddress.ip_address(ip))
    assert found is not None and found[0] == country
    described = production.describe(ipaddress.ip_address(ip))
    assert described is not None and described[0] == country
    assert ipaddress.ip_address(ip) in described[1]
