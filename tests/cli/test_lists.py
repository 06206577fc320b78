"""Lists as an operator meets them on the command line: ``check`` names the list's bad
lines as FILE:LINE, ``explain`` cites the list and line that matched, ``lists show``
says what each list holds, ``lists update`` keeps a copy the daemon reads."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.cli.process import iptserver

EXITS = "exits:\n  uk: {interface: wg-uk}\n  ru: {interface: wg-ru}\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def schema(tmp_path: Path) -> Path:
    write(tmp_path, "uk.txt", "# UK list\nbbc.co.uk\n*.example.org\nnot a name!\n203.0.113.0/24\n")
    write(tmp_path, "ru.conf", "server=/yandex.ru/mail.ru/77.88.8.8\nconf-file=/etc/x\n")
    return write(
        tmp_path,
        "schema.yaml",
        EXITS
        + "rules:\n"
        + "  - exit: uk\n    lists:\n      - file: uk.txt\n"
        + "  - exit: ru\n    lists: [{file: ru.conf, format: dnsmasq}]\n",
    )


def test_check_reports_each_bad_list_line_as_file_line(schema: Path) -> None:
    result = iptserver("check", str(schema))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    folder = schema.parent
    assert lines[0].startswith(f"{folder}/uk.txt:4: expected one domain a line")
    assert lines[1].startswith(f"{folder}/ru.conf:2: dnsmasq option 'conf-file'")
    assert len(lines) == 2


def test_check_passes_clean_lists_and_counts_their_entries(tmp_path: Path) -> None:
    write(tmp_path, "uk.txt", "bbc.co.uk\n203.0.113.0/24\n")
    path = write(tmp_path, "s.yaml", EXITS + "rules:\n  - exit: uk\n    lists: [{file: uk.txt}]\n")
    result = iptserver("check", str(path))
    assert result.returncode == 0, result.stderr
    assert "1 lists of 2 entries" in result.stdout


def test_a_missing_list_file_is_an_error_on_the_schema_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "s.yaml", EXITS + "rules:\n  - exit: uk\n    lists: [{file: gone.txt}]\n"
    )
    result = iptserver("check", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"{path}:6:20: rules.0.lists.0.file: cannot read the list gone.txt: No such file"
    )


def test_explain_cites_the_list_and_line_that_matched(schema: Path) -> None:
    result = iptserver("explain", str(schema), "news.bbc.co.uk", "www.mail.ru", "--json")
    assert result.returncode == 0, result.stderr
    uk, ru = json.loads(result.stdout)
    assert (uk["exit"], uk["match"]["list"]) == ("uk", f"{schema.parent}/uk.txt:2")
    assert (ru["exit"], ru["match"]["list"]) == ("ru", f"{schema.parent}/ru.conf:1")
    text = iptserver("explain", str(schema), "203.0.113.9").stdout
    assert f"net 203.0.113.0/24 (list {schema.parent}/uk.txt:5)" in text


def test_lists_show_says_what_each_list_holds(schema: Path) -> None:
    result = iptserver("lists", "show", str(schema))
    assert result.returncode == 0, result.stderr
    assert "uk.txt  (rule 0, line 7, exit uk)" in result.stdout
    assert "2 domains, 1 networks" in result.stdout
    assert "skipped lines: 1" in result.stdout


@pytest.fixture
def list_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A list host on loopback serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_lists_update_keeps_a_copy_that_check_and_explain_read(
    tmp_path: Path, list_site: tuple[str, Path]
) -> None:
    site, root = list_site
    write(root, "ru.txt", "yandex.ru\n")
    path = write(
        tmp_path, "s.yaml", EXITS + f"rules:\n  - exit: ru\n    lists: [{{url: {site}/ru.txt}}]\n"
    )
    state = tmp_path / "state"
    no_copy = iptserver("explain", str(path), "yandex.ru", "--state-dir", str(state))
    assert "main routing table" in no_copy.stdout

    result = iptserver("lists", "update", str(path), "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    assert f"{site}/ru.txt: 1 domains, 0 networks" in result.stdout
    explained = iptserver("explain", str(path), "yandex.ru", "--state-dir", str(state))
    assert "exit ru" in explained.stdout
    again = iptserver("lists", "update", str(path), "--state-dir", str(state))
    assert f"{site}/ru.txt: unchanged" in again.stdout, "If-Modified-Since: 304"

    write(root, "ru.txt", "<html>Service Unavailable</html>\n")  # an error page, status 200
    later = time.time() + 5  # newer than the copy, to the second
    os.utime(root / "ru.txt", (later, later))
    refused = iptserver("lists", "update", str(path), "--state-dir", str(state))
    assert refused.returncode == 1
    assert "refused" in refused.stderr and "the last good copy stays" in refused.stderr
    assert (
        "exit ru" in iptserver("explain", str(path), "yandex.ru", "--state-dir", str(state)).stdout
    )
