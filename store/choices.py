"""Names the command line offers as choices, in a module that imports nothing: the
aggregates live in :mod:`whyclip.store.method.aggregates`, which needs numpy, and
``whyclip --help`` should not load numpy to list three words."""

AGGREGATES = ("mean", "centroid", "max")
