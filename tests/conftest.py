from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iptserver.geoip import GeoIPDatabase
from iptserver.geoip.build import write_country_db
from iptserver.lab import Lab, reap_stale_labs
from iptserver.lab.addresses import LAB_COUNTRIES

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "schema" / "examples"

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """One real lab (network namespaces, wireguard-go) for the whole session."""
    for reaped in reap_stale_labs():
        log.warning("reaped lab %s left behind by a killed run", reaped)
    with Lab() as built:
        yield built


@pytest.fixture(scope="session")
def lab_mmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's GeoIP database, built the way ``iptserver geoip lab`` builds it."""
    path = tmp_path_factory.mktemp("geoip") / "lab-country.mmdb"
    write_country_db(path, LAB_COUNTRIES, "iptserver test lab")
    return path


@pytest.fixture(scope="session")
def lab_geoip(lab_mmdb: Path) -> GeoIPDatabase:
    return GeoIPDatabase(lab_mmdb)


@pytest.fixture
def write_schema(tmp_path: Path) -> Callable[[str], Path]:
    counter = iter(range(1_000_000))

    def write(text: str) -> Path:
        path = tmp_path / f"schema-{next(counter)}.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
