"""Type-check whyclip with mypy, as CI does: ``python .ci/typecheck.py [MYPY ARGS...]``.

The repository keeps store/, ingest/ and ui/ at its top while they install as
whyclip.store, whyclip.ingest and whyclip.ui (setuptools' package-dir), a mapping mypy
cannot follow. So the check runs in a temporary folder of links laid out as installed,
whyclip/{__init__.py,store,ingest,ui} and bench/, with the settings in pyproject.toml;
error paths are given back as repository paths. Nothing is written in the repository (the
cache goes to the temporary folder unless MYPY_CACHE_DIR names one). The exit status is
mypy's: non-zero on any error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINKS = {  # path in the installed layout -> path in the repository
    "whyclip/__init__.py": "whyclip/__init__.py",
    "whyclip/store": "store",
    "whyclip/ingest": "ingest",
    "whyclip/ui": "ui",
    "bench": "bench",
}
TARGETS = ["whyclip", "bench"]


def link_tree(target: Path) -> None:
    """``target``/whyclip/{__init__.py,store,ingest,ui} and ``target``/bench, as links."""
    (target / "whyclip").mkdir(parents=True)
    for installed, repo in LINKS.items():
        (target / installed).symlink_to(ROOT / repo, target_is_directory=(ROOT / repo).is_dir())


def repo_path(line: str) -> str:
    """A line of mypy's output with its installed-layout path put back as the repository's."""
    for installed, repo in sorted(LINKS.items(), key=lambda item: -len(item[0])):
        if line.startswith(installed):
            return repo + line[len(installed) :]
    return line


def main(args: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="whyclip-mypy-") as tmp:
        tree = Path(tmp) / "tree"
        link_tree(tree)
        cache = [] if os.environ.get("MYPY_CACHE_DIR") else ["--cache-dir", str(Path(tmp) / "cache")]
        command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *cache]
        proc = subprocess.run(
            [*command, *(args or TARGETS)], cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    for line in proc.stdout.splitlines():
        print(repo_path(line))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
