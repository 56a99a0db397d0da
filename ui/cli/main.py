"""The ``whyclip`` command line: the group, and where each command lives. Results go to
stdout; progress, logs and warnings to stderr, so ``--json`` output pipes cleanly. Bad input
exits non-zero with one line.

The group is lazy: a command's module (one per group of commands, beside this file) loads
only when that command runs or shows its help, so ``whyclip --help`` imports no database,
model or server, and each command module imports what it needs at its top.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from whyclip.store import WhyclipError, shown_text

log = logging.getLogger("whyclip")

#: command -> module:attribute, imported on first use; ``whyclip --help`` lists them by
#: :data:`SECTIONS` with their one-line summaries (no command module loads for it).
COMMANDS = {
    "audit": "whyclip.ui.cli.evaluate:audit",
    "calibrate": "whyclip.ui.cli.calibrate:calibrate",
    "clean": "whyclip.ui.cli.generate:clean",
    "delete": "whyclip.ui.cli.lifecycle:delete_cmd",
    "demo": "whyclip.ui.cli.demo:demo",
    "eval": "whyclip.ui.cli.evaluate:eval_cmd",
    "eval-pairs": "whyclip.ui.cli.generate:eval_pairs_cmd",
    "explain": "whyclip.ui.cli.explain:explain",
    "export": "whyclip.ui.cli.lifecycle:export_cmd",
    "gc": "whyclip.ui.cli.lifecycle:gc_cmd",
    "generate": "whyclip.ui.cli.generate:generate",
    "generate-pairs": "whyclip.ui.cli.generate:generate_pairs_cmd",
    "ingest": "whyclip.ui.cli.libraries:ingest_cmd",
    "ingest-pairs": "whyclip.ui.cli.generate:ingest_pairs_cmd",
    "libraries": "whyclip.ui.cli.libraries:libraries",
    "make-test-model": "whyclip.ui.cli.demo:make_test_model_cmd",
    "migrate": "whyclip.ui.cli.migrate:migrate",
    "pairs": "whyclip.ui.cli.generate:pairs_cmd",
    "runs": "whyclip.ui.cli.evaluate:runs",
    "serve": "whyclip.ui.cli.serve:serve",
    "ui": "whyclip.ui.cli.dashboard:ui",
    "whatif": "whyclip.ui.cli.whatif:whatif",
}


#: ``whyclip --help`` lists the commands in these sections, in this order, each with a summary
#: short enough to stand whole on an 80-column line (tests/test_cli_consistency.py checks
#: that every command is in exactly one section)
SECTIONS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Build a library",
        (
            ("demo", "Ingest the demo library and explain drawn sample images"),
            ("ingest", "Embed descriptor files (.json/.jsonl/.csv) as libraries"),
            ("generate", "Write descriptors for a list of classes with an LLM"),
            ("clean", "Clean a library file; report each line dropped and why"),
            ("generate-pairs", "Ask an LLM what tells confused classes apart (FuDD)"),
            ("ingest-pairs", "Store a pairs file with a library version"),
            ("make-test-model", "Write a random-weight CLIP folder for trying things"),
        ),
    ),
    ("Explain", (("explain", "Why each image gets its classes, descriptor by descriptor"),)),
    (
        "Evaluate and audit",
        (
            ("eval", "Score a labelled image folder or CSV and store the run"),
            ("runs", "List the stored evaluation runs with their accuracy"),
            ("audit", "Report on a run: accuracy, controls, drivers, hygiene"),
            ("calibrate", "Fit a temperature on a run; ECE before and after"),
            ("whatif", "What an edit of the descriptors would do to a run"),
            ("eval-pairs", "Re-rank a run with a pairs file's descriptions (FuDD)"),
        ),
    ),
    (
        "Manage the store",
        (
            ("libraries", "List the libraries in the store"),
            ("pairs", "List the pair descriptors stored with a library"),
            ("export", "Write a library version to a file, with its settings"),
            ("delete", "Delete a library, or one of its versions"),
            ("gc", "Remove orphaned index folders (and unused cached vectors)"),
            ("migrate", "Bring the database up to this whyclip's schema"),
        ),
    ),
    (
        "Serve",
        (
            ("serve", "Serve explanations over HTTP (a JSON API)"),
            ("ui", "Start the dashboard in the browser"),
        ),
    ),
)


class WhyclipGroup(click.Group):
    """Commands load from :data:`COMMANDS` on first use. Bad input gives one line on stderr
    and a non-zero exit, never a traceback: the project's own errors exit 1, usage errors
    exit 2 (without click's usage block)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[name].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands by section, each with its one-line summary, from :data:`SECTIONS`:
        no command module loads."""
        width = max(len(name) for _, entries in SECTIONS for name, _ in entries)
        for title, entries in SECTIONS:
            with formatter.section(title):
                formatter.write_dl([(name.ljust(width), summary) for name, summary in entries])
        formatter.write_paragraph()
        formatter.write_text("'whyclip COMMAND --help' says what a command does and takes.")

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except WhyclipError as exc:
            raise click.ClickException(shown_text(str(exc))) from None  # a stored name never drives the terminal

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


class _LowerLevelFormatter(logging.Formatter):
    """``warning: ...`` on one line; an exception logged with the record (an unexpected error
    in the service, a failed job) keeps its traceback below it."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _configure_logging(verbose: bool) -> None:
    """Our warnings on stderr as 'warning: ...'; the libraries' chatter only with -v."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowerLevelFormatter())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
        for name in ("transformers", "sentence_transformers", "huggingface_hub", "faiss"):
            logging.getLogger(name).setLevel(logging.ERROR)


@click.group(cls=WhyclipGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="WHYCLIP_HOME",
    help="Data directory for the database and index files [env WHYCLIP_HOME; default: per-user data dir].",
)
@click.option(
    "--db", envvar="WHYCLIP_DB", help="SQLAlchemy URL for the metadata [env WHYCLIP_DB; default: SQLite in --home]."
)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (to stderr).")
@click.version_option(package_name="whyclip")
@click.pass_context
def cli(ctx: click.Context, home: str | None, db: str | None, verbose: bool) -> None:
    """whyclip: explainable zero-shot image classification by visual descriptors.

    Each class is described by short visual descriptors; CLIP scores a class by the image's
    similarity to them, and the ranked descriptor similarities are the explanation.
    """
    _configure_logging(verbose)
    ctx.obj = {"home": home, "db": db}


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli(prog_name="whyclip")


if __name__ == "__main__":
    main()
