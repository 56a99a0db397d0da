"""The database (SQLAlchemy: SQLite by default, or any URL such as PostgreSQL): the engine,
the schema and its migrations, write transactions, the embedding and answer caches,
evaluation runs, calibrations, pair descriptors, precision verdicts, encoder ids, paged
browsing and a version's lifecycle. Functions here take an engine (the lifecycle, which
needs the data directory, a :class:`~whyclip.store.catalogue.Store`). Vectors live in files
(:mod:`whyclip.store.vectors`)."""
