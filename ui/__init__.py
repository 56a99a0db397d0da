"""Every way in: the command line (``ui.cli``), the HTTP service (``ui.api``) and the
dashboard (``ui.dashboard``), with the renderers they share (``ui.render``). Thin: collect
input, call ingest/store once, render the result."""
