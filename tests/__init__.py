"""whyclip's tests. A package, so that pytest puts the repository root on sys.path and
the shared builders import as ``tests.helpers``."""
