"""The HTTP service (``whyclip serve``): FastAPI routers over the store and one encoder."""

from .app import create_app
from .settings import Limits, ServiceSettings

__all__ = ["Limits", "ServiceSettings", "create_app"]
