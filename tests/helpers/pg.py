"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, started on a
free loopback port, one fresh database per test, stopped and removed at the end.

``WHYCLIP_TEST_PG_URL`` (a ``postgresql+psycopg://`` URL whose user may create databases)
uses an existing server instead. Without either, PostgreSQL tests skip with the reason.
The server is stopped by the session fixture's finalizer and, should the test process end
another way, by ``atexit``; ``pg_ctl stop -m immediate`` waits until it has exited.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

URL_ENV = "WHYCLIP_TEST_PG_URL"
SERVER_USER = "postgres"  # initdb refuses root: as root the server runs as this user


def find_binaries() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian's layout), or initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A PostgreSQL cluster in a temporary folder, trusted on 127.0.0.1 only."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="whyclip-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.running = False
        self.as_user = os.geteuid() == 0
        if self.as_user:
            shutil.chown(self.root, SERVER_USER, SERVER_USER)

    def _run(self, *args: str, timeout: int = 120) -> None:
        cmd = (["runuser", "-u", SERVER_USER, "--"] if self.as_user else []) + list(args)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> str:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"
        )
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        self.running = True  # from here on stop() has something to stop
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start"
        )
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.running:
            self.running = False
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):  # not started after all
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> tuple[str | None, str, Cluster | None]:
    """(server URL or None, why not, the cluster to stop)."""
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV], "", None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg is not installed (pip install 'psycopg[binary]')", None
    bin_dir = find_binaries()
    if bin_dir is None:
        return None, f"no PostgreSQL server binaries (apt-get install postgresql, or set {URL_ENV})", None
    cluster = Cluster(bin_dir)
    atexit.register(cluster.stop)
    try:
        return cluster.start(), "", cluster
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        return None, f"could not start a PostgreSQL server: {exc}", None


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def _admin(url: str, sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def create_database(server_url: str) -> tuple[str, str]:
    """A new empty database on the server: (its URL, its name)."""
    name = f"whyclip_test_{uuid.uuid4().hex[:12]}"
    _admin(server_url, f'CREATE DATABASE "{name}"')
    return _with_database(server_url, name), name


def drop_database(server_url: str, name: str) -> None:
    _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
