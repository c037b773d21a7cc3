# Sourced by scripts/run, scripts/test and scripts/check: cd to the repo root and
# make sure .venv exists and holds the given requirements files.
#   ensure_venv NAME FILE...   installs FILE's requirements unless the sha256 of
#                              all FILEs (and the files they include with -r)
#                              matches .venv/.NAME.sha256
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

_find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_venv() {
    local name="$1"
    shift
    if [[ ! -x .venv/bin/python ]]; then
        local python
        if ! python="$(_find_python)"; then
            echo "error: OrderFlow needs Python 3.11 or newer; none found as python3 (set PYTHON=...)" >&2
            exit 1
        fi
        echo "[venv] creating .venv with $("$python" --version)"
        if ! "$python" -m venv .venv; then
            echo "error: '$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
            rm -rf .venv
            exit 1
        fi
    fi
    local stamp=".venv/.$name.sha256" digest
    digest="$(.venv/bin/python - "$@" <<'PY'
import hashlib, sys
from pathlib import Path

def read(path: Path, seen: set[Path]) -> bytes:
    """The file and every file it includes with -r, so an edit to either reinstalls."""
    if path in seen:
        return b""
    seen.add(path)
    data = path.read_bytes()
    for line in data.decode().splitlines():
        if line.startswith("-r "):
            data += read(path.parent / line[3:].strip(), seen)
    return data

seen: set[Path] = set()
print(hashlib.sha256(b"".join(read(Path(name), seen) for name in sys.argv[1:])).hexdigest())
PY
)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]]; then
        return 0
    fi
    echo "[venv] installing $1 into .venv (the first time takes a minute or two)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$1"
    echo "$digest" >"$stamp"
}
