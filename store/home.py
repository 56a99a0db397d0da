"""Where whyclip keeps its data: one place resolves the data directory and database URL."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HOME_ENV = "WHYCLIP_HOME"
DB_ENV = "WHYCLIP_DB"
DB_FILENAME = "whyclip.db"


def default_home() -> Path:
    """The per-user data directory (``$WHYCLIP_HOME`` wins when set)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "whyclip"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "whyclip"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "whyclip"


def resolve_home(home: str | Path | None) -> Path:
    return Path(home).expanduser() if home else default_home()


def resolve_db_url(home: Path, db_url: str | None) -> str:
    """``db_url`` (or ``$WHYCLIP_DB``) if given, else the SQLite file inside ``home``."""
    url = db_url or os.environ.get(DB_ENV)
    if url:
        return url
    return f"sqlite:///{(home / DB_FILENAME).resolve()}"
