"""Files whyclip writes for people (issue 21, item 7): audit reports (HTML, JSON, CSV), an
export and its sidecar, a generated library, all written whole through a temporary file,
get the mode a new file gets under the user's umask, as any program's would: 0644 under
the usual 022 (they were all 0600), 0600 under 077."""

from __future__ import annotations

import os
import stat

import pytest

from tests.helpers.cli import invoke
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.generate.generation import write_json_atomic
from whyclip.ingest.services.evaluate import run_eval


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_reports_exports_and_generated_files_take_the_umask(world, tmp_path, umask, mode):
    store, enc, lib, data = world
    run_eval(store, lib, read_dataset(data), enc, name="r1")
    out = tmp_path / "out"
    old = os.umask(umask)
    try:
        for fmt, target in (("html", out / "audit.html"), ("json", out / "audit.json"), ("csv", out / "tables")):
            done = invoke("audit", "--library", "planted", "--format", fmt, "--out", target, home=store.home)
            assert done.returncode == 0, done.stderr
        done = invoke("export", "planted", "--out", out / "planted.csv", home=store.home)
        assert done.returncode == 0, done.stderr
        write_json_atomic(out / "generated.json", {"tree frog": ["green skin"]})
    finally:
        os.umask(old)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"audit.html", "audit.json", "planted.csv", "planted.csv.meta.json", "generated.json"} <= names
    assert any(p.parent.name == "tables" for p in files)  # the CSV tables
    assert not [p.name for p in files if p.name.endswith(".tmp")]  # no temporary left behind
    modes = {p.relative_to(out).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(mode)}, modes
