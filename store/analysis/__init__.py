"""Analyses of stored evaluation runs, pure numpy and scipy (runs are stored by
:mod:`whyclip.store.db.runs` and keep their image vectors, so nothing here needs a model):
audits (:mod:`.audit`), controls with paired tests (:mod:`.controls`, :mod:`.stats`), the
name/description split (:mod:`.name_split`), probability calibration (:mod:`.calibration`)
and what-if edits (:mod:`.whatif`)."""
