"""The ASGI app for uvicorn: `uvicorn backend.main:app`.

The one place settings are read from the environment at import: uvicorn
imports this module to find the app.
"""

import gc

from backend import logs
from backend.app import create_app
from backend.settings import Settings

# A node holds many small long-lived objects (cache entries, sockets): the default
# thresholds run full collections often enough to pause every client for 100s of ms.
gc.set_threshold(10_000, 10, 10)

settings = Settings()
logs.configure(settings.node_id, settings.log_level)
app = create_app(settings)
