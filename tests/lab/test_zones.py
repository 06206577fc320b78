"""The lab's DNS data: well-formed names, CNAMEs that lead somewhere, stable synthetic names."""

from __future__ import annotations

import ipaddress

import pytest

from iptserver.lab.zones import (
    BENCH_COUNT,
    BENCH_FIRST,
    CHURN_NET,
    FRESH_NET,
    ZONE,
    Record,
    synthetic,
)


def test_names_are_lower_case_without_the_trailing_dot() -> None:
    for name in ZONE:
        assert name == name.lower() and not name.endswith("."), name


def test_records_hold_addresses_of_their_type() -> None:
    for name, records in ZONE.items():
        for record in records:
            if record.type == "CNAME":
                continue
            address = ipaddress.ip_address(record.value)
            assert address.version == (4 if record.type == "A" else 6), (name, record)


def test_cnames_lead_to_data_except_the_dangling_one() -> None:
    targets = {r.value for rs in ZONE.values() for r in rs if r.type == "CNAME"}
    assert targets - ZONE.keys() == {"nowhere.example.org"}


@pytest.mark.parametrize("name", ["n1.fresh.bench.ru", "x.y.fresh.bench.ru"], ids=str)
def test_fresh_names_have_their_own_stable_aaaa(name: str) -> None:
    (record,) = synthetic(name)
    assert record.type == "AAAA" and synthetic(name) == (record,)
    assert ipaddress.ip_address(record.value) in ipaddress.ip_network(FRESH_NET)
    assert synthetic("other." + name.split(".", 1)[1]) != (record,)


def test_churn_names_have_nearly_an_address_each() -> None:
    records = [synthetic(f"n{i}.churn.bench.ru") for i in range(1000)]
    assert all(len(r) == 1 and r[0].type == "A" for r in records)
    addresses = {ipaddress.ip_address(r[0].value) for r in records}
    assert all(a in ipaddress.ip_network(CHURN_NET) for a in addresses)
    assert len(addresses) > 980  # 1,000 draws from 65,536
    assert synthetic("n1.churn.bench.ru") == records[1]


def test_bench_names_share_a_few_unplaced_addresses() -> None:
    (record,) = synthetic("q7.bench.ru")
    assert isinstance(record, Record) and record.type == "A"
    assert BENCH_FIRST <= int(record.value.rsplit(".", 1)[1]) < BENCH_FIRST + BENCH_COUNT


@pytest.mark.parametrize(
    "name", ["bench.ru", "fresh.bench.ru", "churn.bench.ru", "www.bbc.co.uk", "xbench.ru"]
)
def test_no_synthetic_records_outside_the_synthetic_zone(name: str) -> None:
    assert synthetic(name) == ()
