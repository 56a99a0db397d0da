"""The ``whyclip`` command line: the group in :mod:`.main`, one module per group of commands."""
