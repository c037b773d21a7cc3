"""The ASGI app for uvicorn: `uvicorn backend.main:app`."""

from backend import logs
from backend.app import create_app
from backend.settings import settings

logs.configure(settings.node_id, settings.log_level)
app = create_app(settings)
