"""What the command modules share: the store that the group's ``--home`` and ``--db`` name."""

from __future__ import annotations

import click

from whyclip.store import Store


def open_store(ctx: click.Context, create: bool, migrate: bool | None = None) -> Store:
    """Write commands create (and migrate) the store; read commands only open a current one
    (a missing or out-of-date store is one line saying what to run)."""
    return Store.open(ctx.obj["home"], ctx.obj["db"], create=create, migrate=migrate)
