from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from iptserver.geoip import GeoIPDatabase
from iptserver.geoip.build import write_country_db
from iptserver.lab.addresses import LAB_COUNTRIES

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "schema" / "examples"


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
