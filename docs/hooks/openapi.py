"""MkDocs hook: the HTTP service's OpenAPI schema as ``openapi.json`` in the built site.

The schema comes from the app factory that ``whyclip serve`` runs, so the static copy the
HTTP service page links is always the code's own. Building the app loads no model and opens
no store (``warm=False``)."""

from __future__ import annotations

import json

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from whyclip.ui.api.app import create_app

SCHEMA_PATH = "openapi.json"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    schema = create_app(warm=False).openapi()
    files.append(File.generated(config, SCHEMA_PATH, content=json.dumps(schema, indent=2) + "\n"))
    return files
