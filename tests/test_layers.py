"""The core knows nothing of the web framework: the HTTP mapping stays with the app."""

import subprocess
import sys


def test_the_database_layer_imports_no_web_framework() -> None:
    code = (
        "import sys, database, backend.sync, backend.cache, backend.bus, backend.hub;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
