"""The HTTP service (``whyclip serve``): FastAPI routers over the store and one encoder.

``create_app`` loads on first use, so importing the settings (as ``whyclip --help`` does,
through the serve command's options) does not load FastAPI and the store."""

from __future__ import annotations

from whyclip.ui.api.settings import Limits, ServiceSettings

__all__ = ["Limits", "ServiceSettings", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from whyclip.ui.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
