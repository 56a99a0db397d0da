"""The pipelines every surface calls (the command line, the HTTP service, the dashboard, the
demo and the Python API): ingest a library file (:mod:`.library_ingest`), evaluate a labelled
image set (:mod:`.evaluate`, with :mod:`.control_libraries` and FuDD's re-ranking in
:mod:`.fudd`), store pair descriptors (:mod:`.pair_ingest`) and what-if edits
(:mod:`.whatif`)."""
