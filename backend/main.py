"""The ASGI app for uvicorn: `uvicorn backend.main:app`.

The one place settings are read from the environment at import: uvicorn
imports this module to find the app.
"""

import gc
import os

from dotenv import dotenv_values

from backend import logs
from backend.app import create_app
from backend.settings import Settings

# A node holds many small long-lived objects (cache entries, sockets): the default
# thresholds run full collections often enough to pause every client for 100s of ms.
gc.set_threshold(10_000, 10, 10)


def _otel_from_env_file(path: str = ".env") -> None:
    """`.env`'s OTEL_* lines into the environment, the only place OpenTelemetry reads
    them (Settings read `.env` themselves); one set in the environment wins."""
    for name, value in dotenv_values(path).items():
        if name.startswith("OTEL_") and value is not None:
            os.environ.setdefault(name, value)


settings = Settings()
logs.configure(settings.node_id, settings.log_level)
_otel_from_env_file()
app = create_app(settings)
