"""``whyclip demo``: the bundled demo library (``library.json``), drawn sample images
(:mod:`.samples`) and the tour that explains them (:mod:`.run`)."""
