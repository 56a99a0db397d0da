"""``whyclip serve`` and ``whyclip ui`` on a port something already listens on (issue 21,
item 9): one line naming the port and ``--port``, exit 1, and no announcement of a URL
that will not answer."""

from __future__ import annotations

import socket

import click
import pytest

from tests.helpers.cli import invoke
from whyclip.ui.cli.options import check_port_free


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_a_port_in_use_is_one_line_before_any_announcement(taken_port, command):
    done = invoke(command, "--port", str(taken_port))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"Error: port {taken_port} on 127.0.0.1 is already in use: stop what listens there, or choose another --port"
    ]
    assert "http://" not in done.stdout + done.stderr


def test_a_free_port_passes_the_check():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening, then closed: free again
    check_port_free("127.0.0.1", port)
    with pytest.raises(click.ClickException, match="give another --host"):
        check_port_free("no-such-host.invalid", port)
