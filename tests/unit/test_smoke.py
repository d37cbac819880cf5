"""Every flow imports, and every prefect.yaml deployment's entrypoint resolves to a flow."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import yaml
from prefect import Flow
from prefect.flows import load_flow_from_entrypoint

import flows
from amas.stack import PROJECT_DIR

pytestmark = pytest.mark.unit

DEPLOYMENTS = yaml.safe_load((PROJECT_DIR / "prefect.yaml").read_text())["deployments"]


MODULES = [m.name for m in pkgutil.iter_modules(flows.__path__)]


@pytest.mark.parametrize("module", [m for m in MODULES if not m.startswith("_")])
def test_every_flow_module_imports_and_defines_a_flow(module: str) -> None:
    loaded = importlib.import_module(f"flows.{module}")
    assert any(isinstance(value, Flow) for value in vars(loaded).values())


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("_")])
def test_flow_helpers_import_and_define_no_flow(module: str) -> None:
    # Helpers shared by flow modules start with "_"; a flow in one would never be deployed.
    loaded = importlib.import_module(f"flows.{module}")
    assert not any(isinstance(value, Flow) for value in vars(loaded).values())


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_every_deployment_entrypoint_resolves(deployment: dict) -> None:
    path, _, name = deployment["entrypoint"].partition(":")
    flow = load_flow_from_entrypoint(str(PROJECT_DIR / path) + ":" + name)
    assert isinstance(flow, Flow)
    assert deployment["work_pool"]["name"] == "amas-local"
