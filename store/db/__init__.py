"""The database (SQLAlchemy: SQLite by default, or any URL such as PostgreSQL): the schema
and its migrations, the :class:`~.store.Store` that publishes library versions, the
embedding cache and paged browsing. Vectors live in files (:mod:`whyclip.store.vectors`)."""
