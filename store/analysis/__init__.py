"""Evaluation runs (:mod:`.storage`: written whole, read back for audits) and audits of them
(:mod:`.audit`: accuracy, drivers, confusion evidence, hygiene, controls). Audits need no
model: a run stores its image vectors."""
