"""deploy/: the Dockerfile, compose.yaml, Prometheus' and Grafana's files agree with each
other and with fedgate itself (its CLI parser, its metrics), without a container runtime."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

from fedgate.cli import build_parser
from fedgate.web.metrics import METRICS, PATH, exported_names

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SECRETS_DIR = "/run/secrets/"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


def only(keyword: str) -> str:
    found = [i.arguments for i in dockerfile() if i.keyword == keyword]
    assert len(found) == 1, f"the Dockerfile should have one {keyword}, not {len(found)}"
    return found[0]


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "compose.yaml")


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"][name]
    return found


def serve_args(command: list[str]) -> argparse.Namespace:
    """A `fedgate serve` command line, parsed by fedgate's own parser (it exits on error)."""
    assert command[:2] == ["fedgate", "serve"], command
    return build_parser().parse_args([str(word) for word in command[1:]])


def gateway_args(compose: dict[str, Any]) -> argparse.Namespace:
    return serve_args(service(compose, "gateway")["command"])


def published(entry: str) -> tuple[str, int]:
    """A compose ports entry (``[IP:]HOST:CONTAINER``) as (host part, container port)."""
    host, _, container = str(entry).rpartition(":")
    return host, int(container)


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts: source (relative to deploy/) -> target in the container."""
    pairs = (str(volume).split(":") for volume in svc.get("volumes", []))
    return {parts[0]: parts[1] for parts in pairs if parts[0].startswith(".")}


def secret_file(compose: dict[str, Any], svc: dict[str, Any], path: str) -> Path:
    """The host file behind ``/run/secrets/NAME`` in ``svc``; it must list the secret."""
    assert path.startswith(SECRETS_DIR), path
    name = path.removeprefix(SECRETS_DIR)
    assert name in svc.get("secrets", []), f"{name} is not given to the service"
    return (DEPLOY / str(compose["secrets"][name]["file"])).resolve()


# ---- the image ---------------------------------------------------------------------------


def test_the_image_installs_fedgate_from_the_tree_with_the_pinned_constraints() -> None:
    assert only("FROM") == "python:3.11-slim"
    copied = [i.arguments.split() for i in dockerfile() if i.keyword == "COPY"]
    sources = {word for words in copied for word in words[:-1] if not word.startswith("--")}
    assert {"pyproject.toml", "constraints.txt", "fedgate"} <= sources
    for source in sources:  # the build context is the repository root
        assert (ROOT / source).exists(), source
    installs = [
        i.arguments for i in dockerfile() if i.keyword == "RUN" and "pip install" in i.arguments
    ]
    assert any(re.search(r"(--constraint|-c) constraints\.txt", run) for run in installs)
    assert only("USER") not in {"root", "0"}


def test_the_image_command_exposes_its_ports_and_checks_its_health() -> None:
    args = serve_args(json.loads(only("CMD")))
    exposed = {int(port) for port in only("EXPOSE").split()}
    assert exposed == {args.grpc_port, args.http_port}
    assert args.host == "0.0.0.0"
    health = urlsplit(re.findall(r"http://[^'\"]+", only("HEALTHCHECK"))[0])
    assert (health.port, health.path) == (args.http_port, "/healthz")
    entrypoint = json.loads(only("ENTRYPOINT"))
    assert entrypoint == ["fedgate-entrypoint"]


# ---- compose ----------------------------------------------------------------------------


def test_compose_builds_this_image_and_serves_on_the_image_ports(compose: dict[str, Any]) -> None:
    gateway = service(compose, "gateway")
    build = gateway["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    args = gateway_args(compose)
    image_args = serve_args(json.loads(only("CMD")))
    assert (args.grpc_port, args.http_port) == (image_args.grpc_port, image_args.http_port)
    assert args.host == "0.0.0.0"  # reachable from the other containers and the host
    container_ports = {published(entry)[1] for entry in gateway["ports"]}
    assert container_ports == {args.grpc_port, args.http_port}
    assert "--admin-token" not in gateway["command"]  # a secret, from a file: never here


def test_the_database_is_the_postgres_service(compose: dict[str, Any]) -> None:
    url = make_url(gateway_args(compose).db)
    assert url.host is not None
    assert url.drivername == "postgresql+psycopg"
    assert url.password is None  # PGPASSWORD, from the secret, by the entrypoint
    assert url.host in compose["services"]
    postgres = service(compose, url.host)
    assert str(postgres["image"]).startswith("postgres:")
    environment = postgres["environment"]
    assert (url.username, url.database) == (
        environment["POSTGRES_USER"],
        environment["POSTGRES_DB"],
    )
    assert url.port in (None, 5432)
    gateway = service(compose, "gateway")
    assert gateway["depends_on"][url.host]["condition"] == "service_healthy"
    # one password: the file the database is initialised with is the one the gateway reads
    assert secret_file(compose, postgres, environment["POSTGRES_PASSWORD_FILE"]) == secret_file(
        compose, gateway, gateway["environment"]["FEDGATE_DB_PASSWORD_FILE"]
    )


def test_the_entrypoint_reads_the_secrets_compose_names(compose: dict[str, Any]) -> None:
    script = (DEPLOY / "entrypoint.sh").read_text()
    for variable in service(compose, "gateway")["environment"]:
        assert variable.endswith("_FILE") and f"${{{variable}" in script, variable
    assert "--admin-token" in script and "PGPASSWORD" in script
    assert (DEPLOY / "secrets" / ".gitignore").read_text().splitlines()[-2:] == [
        "*",
        "!.gitignore",
    ]


# ---- Prometheus -------------------------------------------------------------------------


def prometheus_config(compose: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The scrape config of the fedgate job, as the prometheus service mounts it."""
    prometheus = service(compose, "prometheus")
    flags = dict(str(flag).split("=", 1) for flag in prometheus["command"] if "=" in str(flag))
    source = next(s for s, target in mounts(prometheus).items() if target == flags["--config.file"])
    config = load_yaml(DEPLOY / source)
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "fedgate"]
    return prometheus, job


def test_prometheus_scrapes_the_gateways_metrics(compose: dict[str, Any]) -> None:
    _, job = prometheus_config(compose)
    args = gateway_args(compose)
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    host, _, port = target.rpartition(":")
    assert host == "gateway" and int(port) == args.http_port
    assert job["metrics_path"] == PATH
    tls = args.tls_cert is not None
    assert job.get("scheme", "http") == ("https" if tls else "http")


def test_prometheus_scrapes_with_the_gateways_token(compose: dict[str, Any]) -> None:
    """/metrics needs a credential unless --public-dashboard: the admin token, one file."""
    prometheus, job = prometheus_config(compose)
    gateway = service(compose, "gateway")
    if gateway_args(compose).public_dashboard:
        return
    authorization = job["authorization"]
    assert authorization.get("type", "Bearer") == "Bearer"
    scraped_with = secret_file(compose, prometheus, authorization["credentials_file"])
    served_with = secret_file(compose, gateway, gateway["environment"]["FEDGATE_ADMIN_TOKEN_FILE"])
    assert scraped_with == served_with


# ---- Grafana ----------------------------------------------------------------------------


def grafana_files(compose: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """The provisioned data source, the dashboard provider and the board's directory."""
    grafana = service(compose, "grafana")
    bound = {target: DEPLOY / source for source, target in mounts(grafana).items()}
    provisioning = bound["/etc/grafana/provisioning"]
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    (provider,) = load_yaml(provisioning / "dashboards" / "fedgate.yml")["providers"]
    return source, provider, bound[provider["options"]["path"]]


def board_queries(board: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    panels = [p for p in board["panels"] if p["type"] != "row"]
    return [(panel, target["expr"]) for panel in panels for target in panel["targets"]]


def test_grafana_reads_the_prometheus_service(compose: dict[str, Any]) -> None:
    source, _, _ = grafana_files(compose)
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus" and url.hostname in compose["services"]
    assert url.port == 9090
    assert any(published(p)[1] == 9090 for p in service(compose, "prometheus")["ports"])


def test_the_board_queries_only_and_all_of_fedgates_metrics(compose: dict[str, Any]) -> None:
    source, _, directory = grafana_files(compose)
    board = json.loads((directory / "fedgate.json").read_text())
    names = exported_names()
    queried: set[str] = set()
    for panel, expr in board_queries(board):
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        used = set(re.findall(r"\bfedgate_[a-z0-9_]+", expr))
        assert used, f"{panel['title']}: {expr}"
        assert used <= names, f"{panel['title']} queries {sorted(used - names)}"
        queried |= used
    plotted = {name for name in METRICS if any(q.startswith(name) for q in queried)}
    assert plotted == set(METRICS), f"not on the board: {sorted(set(METRICS) - plotted)}"


def test_the_readme_shows_the_command_compose_runs(compose: dict[str, Any]) -> None:
    """deploy/README.md documents the ports and the scrape as they are."""
    readme = (DEPLOY / "README.md").read_text()
    args = gateway_args(compose)
    for text in (str(args.grpc_port), str(args.http_port), PATH, "--public-dashboard"):
        assert text in readme, text
    assert shlex.join(["docker", "compose", "up", "-d", "--build"]) in readme
