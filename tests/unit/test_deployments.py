"""deployments/compose.yaml: loopback-only, healthy-before-use, secrets from the environment only."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from amas.config import Profile, all_env_names, load_settings

pytestmark = pytest.mark.unit

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"
SECRET_WORDS = ("KEY", "SECRET", "PASSWORD", "AUTH")
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}")
# `$$` is compose's escape for a literal dollar, so `$${X}` is not an interpolation.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
URL_PASSWORD = re.compile(r"://[^/@:\s]+:([^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOYMENTS / "compose.yaml").read_text())


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def all_strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*all_strings(k), *all_strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in all_strings(item)]
    return [node] if isinstance(node, str) else []


def substitute(value: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{([A-Z0-9_]+)(:\?[^}]*)?\}", lambda m: values[m.group(1)], value)


def test_it_is_a_compose_spec_file_with_the_five_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the compose spec has no version key"
    assert set(compose["services"]) == {"postgres", "minio", "marquez", "prefect-server", "worker"}
    assert all(s.get("restart") == "unless-stopped" for s in compose["services"].values())


def test_every_service_has_a_healthcheck_or_is_the_worker(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert name == "worker" or service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_every_published_port_binds_loopback_only(compose: dict[str, Any]) -> None:
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else (
                str(port).rsplit(":", 2)[0] if str(port).count(":") == 2 else None)
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond 127.0.0.1"
            published += 1
    assert "127.0.0.1:4200:4200" in compose["services"]["prefect-server"]["ports"]
    assert published >= 1


def test_every_amas_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    known = set(all_env_names())
    for name, service in compose["services"].items():
        for key in environment(service):
            assert not key.startswith("AMAS_") or key in known, f"{name} sets {key}, which AMAS does not read"
    for variable in INTERPOLATION.findall("\n".join(all_strings(compose))):
        assert not variable.startswith("AMAS_") or variable in known, f"${{{variable}}} is not an AMAS setting"


def test_secrets_come_only_from_required_environment_variables(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if any(word in key for word in SECRET_WORDS):
                assert REQUIRED_VARIABLE.fullmatch(value), f"{name}: {key} must be ${{VAR:?message}}, not {value!r}"
                checked += 1
            for password in URL_PASSWORD.findall(value):
                assert REQUIRED_VARIABLE.fullmatch(password), f"{name}: {key} has a literal password in its URL"
                checked += 1
    assert checked >= 10


def test_every_variable_to_set_is_documented(compose: dict[str, Any]) -> None:
    readme = (DEPLOYMENTS / "README.md").read_text()
    variables = set(INTERPOLATION.findall("\n".join(all_strings(compose))))
    assert variables
    assert not [v for v in sorted(variables) if f"{v}=" not in readme]


def test_postgres_is_waited_for_until_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    dependants = [name for name, s in services.items() if "postgres" in (s.get("depends_on") or {})]
    assert {"marquez", "prefect-server", "worker"} <= set(dependants)
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert rule == {"condition": "service_healthy"}, f"{name} starts before {target} is healthy"
            assert services[target].get("healthcheck"), f"{name} waits on {target}, which has no healthcheck"


def test_the_prefect_server_listens_inside_the_network_on_postgres_with_auth(compose: dict[str, Any]) -> None:
    server = compose["services"]["prefect-server"]
    assert server["image"] == "prefecthq/prefect:3.9.1-python3.11"
    assert " ".join(server["command"]) == "prefect server start --host 0.0.0.0"
    env = environment(server)
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://prefect:")
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("@postgres:5432/prefect")
    assert REQUIRED_VARIABLE.fullmatch(env["PREFECT_SERVER_API_AUTH_STRING"])


def test_the_worker_polls_the_process_pool_with_the_servers_auth(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "build" in worker
    assert "prefect worker start --pool amas-process" in " ".join(worker["command"])
    env = environment(worker)
    assert env["AMAS_PREFECT_WORK_POOL"] == "amas-process"
    assert env["PREFECT_API_URL"] == env["AMAS_PREFECT_API_URL"] == "http://prefect-server:4200/api"
    server_auth = environment(compose["services"]["prefect-server"])["PREFECT_SERVER_API_AUTH_STRING"]
    assert INTERPOLATION.findall(env["PREFECT_API_AUTH_STRING"]) == INTERPOLATION.findall(server_auth)


def test_the_worker_environment_is_accepted_by_the_production_profile(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    dummy = {v: "x" * 24 for v in INTERPOLATION.findall("\n".join(all_strings(compose)))}
    dummy["AMAS_ENCRYPTION_KEY"] = base64.b64encode(bytes(range(32))).decode()
    for key, value in environment(compose["services"]["worker"]).items():
        if key.startswith("AMAS_"):
            monkeypatch.setenv(key, substitute(value, dummy))
    settings = load_settings()
    assert settings.core.profile is Profile.production
    assert settings.database_url.startswith("postgresql+psycopg://amas:")
    assert settings.storage_url == "s3://amas/ops"
    assert settings.lineage.url == "http://marquez:5000"


def test_named_volumes_and_configs_are_declared(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            assert source in (compose.get("volumes") or {}), f"{name} mounts undeclared volume {source}"
        for config in service.get("configs", []):
            assert config["source"] in compose["configs"], f"{name} uses undeclared config {config['source']}"
