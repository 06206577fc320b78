"""The last good copies of downloaded lists, and reading a schema's lists once."""

from __future__ import annotations

from pathlib import Path

from iptserver.lists import parse_list
from iptserver.lists.fetch import refusal
from iptserver.lists.store import ListCache, ListCopy, ListReader, load_with_lists

URL = "https://lists.example/ru.txt"


def test_a_copy_survives_a_new_cache_on_the_same_directory(tmp_path: Path) -> None:
    ListCache(tmp_path).put(ListCopy(URL, b"yandex.ru\n", 1000.0, '"v1"', "Mon, 01 Dec 2026"))
    copy = ListCache(tmp_path).get(URL)
    assert copy == ListCopy(URL, b"yandex.ru\n", 1000.0, '"v1"', "Mon, 01 Dec 2026")
    ListCache(tmp_path).touch(URL, 2000.0)
    touched = ListCache(tmp_path).get(URL)
    assert touched is not None and touched.fetched_at == 2000.0 and touched.etag == '"v1"'
    assert ListCache(tmp_path).get("https://lists.example/other") is None


def test_a_damaged_copy_is_no_copy(tmp_path: Path) -> None:
    cache = ListCache(tmp_path)
    cache.put(ListCopy(URL, b"yandex.ru\n", 1.0))
    for meta in tmp_path.glob("*.json"):
        meta.write_text("{not json")
    assert cache.get(URL) is None


def test_lists_are_parsed_again_only_when_their_bytes_change(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a.example\n")
    schema = tmp_path / "s.yaml"
    schema.write_text(
        "exits: {uk: {interface: wg-uk}}\nrules:\n  - exit: uk\n"
        "    domains: [inline.example]\n    lists: [{file: a.txt}]\n"
    )
    reader = ListReader(None, quiet=True)
    first = load_with_lists(schema, reader)
    again = load_with_lists(schema, reader)
    assert first.lists["a.txt"].parsed is again.lists["a.txt"].parsed
    assert [p.text for p in again.schema.rules[0].domains] == ["inline.example", "a.example"]
    (tmp_path / "a.txt").write_text("b.example\n")
    changed = load_with_lists(schema, reader)
    assert [p.text for p in changed.schema.rules[0].domains] == ["inline.example", "b.example"]


def test_a_copy_with_more_bad_lines_than_entries_is_refused() -> None:
    page = "<html>\n<body>Service Unavailable</body>\n</html>\nok.example\n"
    assert "3 malformed lines against 1 entries" in str(refusal(parse_list(URL, page)))
    assert "no domains or networks" in str(refusal(parse_list(URL, "# empty\n")))
    assert refusal(parse_list(URL, "a.example\nb.example\nnot one!\n")) is None
