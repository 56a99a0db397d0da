"""Every way in: the command line (``ui.cli``) and, later, the dashboard. Thin: collect
input, call ingest/store once, render the result."""
