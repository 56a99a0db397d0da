"""Names as users write them: the one rule for the names whyclip stores (libraries, runs),
checked by every surface; printing stored text safely; and matching a name to a library's
class names, exactly first, then ignoring case, underscores and repeated spaces (how
``eval`` matches dataset labels and ``explain --compare`` matches class names)."""

from __future__ import annotations

from whyclip.store.errors import InputError


def normalise(name: str) -> str:
    """``"Tree_frog "`` and ``"tree  frog"`` both become ``"tree frog"``."""
    return " ".join(name.replace("_", " ").split()).casefold()


def loose_matches(name: str, class_names: list[str]) -> list[int]:
    """Positions of the classes ``name`` names: the exact one, else every class equal to it
    under :func:`normalise` (none, one, or several when the match is ambiguous)."""
    exact = [i for i, n in enumerate(class_names) if n == name]
    if exact:
        return exact[:1]
    key = normalise(name)
    return [i for i, n in enumerate(class_names) if normalise(n) == key]


# -- names a user stores: one rule for every surface ------------------------------------

MAX_NAME_LENGTH = 200  # the width of the name columns (libraries, runs)
# Bidirectional embeddings, overrides and isolates: they reorder what a terminal or a page shows
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unsafe(ch: str) -> bool:
    """NUL, the C0 and C1 control characters (ESC included), DEL, and the bidirectional controls."""
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F or ch in BIDI_CONTROLS


def name_problem(name: str, max_length: int = MAX_NAME_LENGTH) -> str | None:
    """Why ``name`` cannot name something stored (a library, an evaluation run), or None.
    The rule: 1 to ``max_length`` characters, no control or bidirectional-control character,
    no slash or backslash, no space at either end, not ``.`` or ``..``."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > max_length:
        return f"it has {len(name)} characters, more than {max_length}"
    bad = next((ch for ch in name if _unsafe(ch)), None)
    if bad is not None:
        what = "a NUL" if bad == "\x00" else "a bidirectional control" if bad in BIDI_CONTROLS else "a control"
        return f"it contains {what} character (U+{ord(bad):04X})"
    if "/" in name or "\\" in name:
        return "it contains a slash"
    if name != name.strip():
        return "it starts or ends with a space"
    if name in (".", ".."):
        return "it is a dot name"
    return None


def check_name(name: str, what: str = "library name", max_length: int = MAX_NAME_LENGTH) -> str:
    """``name`` when :func:`name_problem` finds nothing; otherwise an :class:`InputError`
    that says why (the one line the CLI prints, the 422 the service answers)."""
    problem = name_problem(name, max_length)
    if problem is not None:
        raise InputError(
            f"{what} '{shown(name) if isinstance(name, str) else name}' is not valid: {problem}; use 1-{max_length} "
            "characters with no control characters, slashes or spaces at either end"
        )
    return name


def check_text(text: str, what: str) -> str:
    """A text sent to the database (a name looked up, a class name, a descriptor): no NUL,
    which PostgreSQL cannot hold and SQLite's text functions read as the end of the text."""
    if "\x00" in text:
        raise InputError(f"{what} '{shown(text)}' contains a NUL character (U+0000): remove it")
    return text


def shown(text: str) -> str:
    """``text`` safe to print: every character that is not printable (controls such as ESC,
    bidirectional controls, other invisible formatting) written as an escape (``\\x1b``,
    ``\\u202e``), so a stored name never drives a terminal. Printable text is unchanged."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def shown_text(text: str) -> str:
    """Several lines made safe to print as :func:`shown` makes one: the line breaks stay."""
    return "\n".join(shown(line) for line in text.split("\n"))


def display_name(name: str) -> str:
    """A name to show to clients (an encoder, a library's source file): a path by its last
    component, anything else (a hub model name, ``upload:lib.json``) as it is, so the
    server's paths stay on the server."""
    if name.startswith(("/", "~", ".", "\\")) or (len(name) > 2 and name[1] == ":" and name[2] in "/\\"):
        parts = [p for p in name.replace("\\", "/").split("/") if p]
        return parts[-1] if parts else name
    return name
