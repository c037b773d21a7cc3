"""The ASGI app for uvicorn: `uvicorn backend.main:app`.

The one place settings are read from the environment at import: uvicorn
imports this module to find the app.
"""

from backend import logs
from backend.app import create_app
from backend.settings import Settings

settings = Settings()
logs.configure(settings.node_id, settings.log_level)
app = create_app(settings)
