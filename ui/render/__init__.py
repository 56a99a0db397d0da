"""Rendering results for people and programs: an explanation as JSON (:mod:`.explanation_json`),
an audit as text, HTML, CSV or JSON (:mod:`.audit_report`, plots in :mod:`.audit_plots`)."""
