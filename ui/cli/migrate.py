"""``whyclip migrate``: bring a store's schema up to date, all or nothing, or show what that
would apply. Read commands never migrate; they point here."""

from __future__ import annotations

import click

from whyclip.store import Store, read_schema_state


def _steps(pending) -> str:
    return "; ".join(f"{rev} ({doc})" if doc else rev for rev, doc in pending)


@click.command()
@click.option(
    "--dry-run", is_flag=True, help="Show the current and target revisions and what would be applied; change nothing."
)
@click.pass_context
def migrate(ctx: click.Context, dry_run: bool) -> None:
    """Bring the store's database up to the schema this whyclip uses (all or nothing)."""
    home, db = ctx.obj["home"], ctx.obj["db"]
    if dry_run:
        st = read_schema_state(home, db)
        click.echo(f"current revision {st.current or 'none'}, target {st.head}")
        click.echo(f"would apply {_steps(st.pending)}" if st.pending else "up to date: nothing to apply")
        return
    before = Store.open(home, db, create=False, migrate=True).migration
    assert before is not None  # a migrating open records where the schema stood
    if before.up_to_date:
        click.echo(f"up to date at revision {before.head}: nothing applied")
    else:
        click.echo(
            f"migrated from revision {before.current or 'none'} to {before.head}: applied {_steps(before.pending)}"
        )
