"""``whyclip serve`` as a real process on a loopback port (slow tier): for what only a real
server shows (its memory, its sockets, being killed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx

KEY = "replica-test-key"
START_S = 120  # a bound on start-up, not a timing assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(home, model, db_url=None, extra_args=(), env=None):
    """A ``whyclip serve`` subprocess on 127.0.0.1 (``extra_args`` added to ``serve``), ready;
    always killed afterwards. Yields the process and a client that sends the key."""
    port = free_port()
    env = {**os.environ, "WHYCLIP_API_KEYS": KEY, **(env or {})}
    args = [sys.executable, "-m", "whyclip.ui.cli.main", "--home", str(home)] + (["--db", db_url] if db_url else [])
    proc = subprocess.Popen(
        [*args, "serve", "--port", str(port), "--model", str(model), *extra_args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers={"X-API-Key": KEY})
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.1)
        yield proc, client
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stderr.close()
