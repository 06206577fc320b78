"""A real PowerDNS Recursor in the lab's entry namespace, optionally with the iptserver
plugin: for the recursor tests and bench/recursor.py."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from iptserver.lab.entry import ENTRY_DNS, UPSTREAM
from iptserver.lab.errors import LabError
from iptserver.lab.topology import Lab
from iptserver.render.recursor import RecursorSettings, Transport, render_recursor
from iptserver.schema.values import parse_endpoint

API = "127.0.0.1:8053"  # iptserver's HTTP API, on the entry's loopback (the default)
START_TIMEOUT = 15.0


def recursor_conf(directory: Path, include: Path, port: int = 53) -> str:
    """The lab's recursor: on the client-side address, everything forwarded to the lab's
    authority (a documentation address, so dont-query is emptied), files in ``directory``."""
    return (
        f"local-address={ENTRY_DNS}\nlocal-port={port}\nsocket-dir={directory}\n"
        "daemon=no\nwrite-pid=no\ndisable-syslog=yes\nsecurity-poll-suffix=\n"
        "dnssec=off\ndont-query=\nallow-from=10.0.0.0/8, 127.0.0.0/8\n"
        f"forward-zones-recurse=.={UPSTREAM}\ninclude-dir={include}\n"
    )


@dataclass
class Recursor:
    """A ``pdns_recursor`` that was started; ``log`` is what it said since."""

    lab: Lab
    proc: subprocess.Popen[bytes]
    log_start: int

    @property
    def log(self) -> str:
        with self.lab.log_path(self.proc).open("rb") as out:
            out.seek(self.log_start)
            return out.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers: by PID, never by name."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_recursor(
    lab: Lab,
    directory: Path,
    *,
    port: int = 53,
    fail_closed: bool = False,
    plugin: bool = True,
    transport: Transport = "udp",
    token_file: Path | None = None,
    api: str = API,
    per_client: bool = False,
) -> Recursor:
    """Render the config into ``directory``, start the recursor; return once it answers."""
    include = directory / "recursor.d"
    include.mkdir(parents=True, exist_ok=True)
    for old in include.iterdir():
        old.unlink()
    if plugin:
        settings = RecursorSettings(
            api=parse_endpoint(api),
            directory=include,
            fail_closed=fail_closed,
            transport=transport,
            token_file=token_file,
            per_client=per_client,
        )
        for name, text in render_recursor(settings).items():
            (include / name).write_text(text, encoding="utf-8")
    (directory / "recursor.conf").write_text(recursor_conf(directory, include, port))
    label = "pdns_recursor" if port == 53 else f"pdns_recursor-{port}"
    log = lab.workdir / "logs" / f"entry-{label}.log"  # as Lab.spawn names it
    log_start = log.stat().st_size if log.exists() else 0
    proc = lab.spawn("entry", ["pdns_recursor", f"--config-dir={directory}"], name=label)
    recursor = Recursor(lab, proc, log_start)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise LabError(f"pdns_recursor exited with {proc.returncode}:\n{recursor.log}")
        try:  # TXT: the plugin leaves answers without addresses alone
            lab.query("client", "mail.ru", "TXT", server=ENTRY_DNS, port=port, timeout=0.5)
            return recursor
        except LabError:
            if time.monotonic() > deadline:
                recursor.stop()
                message = f"pdns_recursor on port {port} does not answer:\n{recursor.log}"
                raise LabError(message) from None
            time.sleep(0.1)
