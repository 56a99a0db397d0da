"""Files written whole: through a temporary file beside the target, renamed over it, so a
reader never sees half a file and a failure leaves the old one. The file gets the mode any
new file gets here (0666 less the umask), as ``open`` would give it: ``mkstemp``'s 0600
made every report unreadable to others."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    try:  # Linux 4.7+: read without changing it (os.umask's read-and-restore races threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_mode(folder: bool = False) -> int:
    """The mode a new file (0666) or folder (0777) gets here: less the umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` whole, with the usual mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
