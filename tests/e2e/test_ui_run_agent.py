"""A data engineer in the Prefect UI, in headless Chromium: open the run-agent deployment, fill
the typed form, start the run, watch it complete on the worker and read its artifact.

Screenshots go to ``test-output/e2e/`` at the project root (or ``$AMAS_TEST_OUTPUT``).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from amas.db.models import AgentTask, TaskStatus
from amas.stack import PROJECT_DIR
from tests.plugins.stack import Up, stack_environment, started_stack

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("AMAS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def ui_stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return stack_environment(tmp_path_factory.mktemp("ui-stack") / "home")


@pytest.fixture(scope="module")
def ui_stack(ui_stack_env: dict[str, str]) -> Iterator[tuple[Up, str]]:
    """One stack for the module's browser tests (starting one takes about a minute)."""
    with started_stack(ui_stack_env) as stack:
        yield stack


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    root = Path(os.environ.get("AMAS_TEST_OUTPUT", PROJECT_DIR / "test-output"))
    folder = root / "e2e" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser_page() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            browser.close()


def field(page: object, label: str) -> object:
    """The input of a schema-form field: labels are not tied to inputs, so go through the property box."""
    prop = page.locator(".schema-form-property").filter(has=page.get_by_text(label, exact=True)).first
    return prop.locator("textarea, input").first


def start_custom_run(page: object, ui: str, deployment_id: str, path: str | None) -> None:
    page.goto(f"{ui}/deployments/deployment/{deployment_id}")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").first.click()
    page.wait_for_url("**/run**")
    if path is not None:
        field(page, "Path").fill(path)
    page.get_by_role("button", name="Submit", exact=True).click()


def test_a_run_agent_deployment_runs_from_the_form_and_shows_its_artifact(
    ui_stack: tuple[Up, str], ui_stack_env: dict[str, str], browser_page: object, output_dir: Path,
    tmp_path: Path,
) -> None:
    page = browser_page
    _, api = ui_stack
    ui = api.removesuffix("/api")
    data = tmp_path / "sensor-readings.csv"
    pd.DataFrame({"reading": [float(i % 17) for i in range(300)] + [950.0],
                  "site": [f"site-{i % 4}" for i in range(301)]}).to_csv(data, index=False)
    deployment = httpx.get(f"{api}/deployments/name/run-agent/data-analysis", timeout=10).json()
    assert set(deployment["parameter_openapi_schema"]["properties"]) == {"params", "priority", "requested_by"}

    # The typed form refuses a missing required field before anything is created.
    start_custom_run(page, ui, deployment["id"], path=None)
    page.get_by_text("'path' is a required property").first.wait_for()
    assert page.url.endswith("/run") or "/run?" in page.url
    page.screenshot(path=str(output_dir / "1-required-field-refused.png"), full_page=True)
    runs = httpx.post(f"{api}/flow_runs/filter", timeout=10,
                      json={"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}).json()
    assert runs == [], "a refused form must not create a run"

    # Filled in, it runs on the worker and completes.
    start_custom_run(page, ui, deployment["id"], path=str(data))
    page.get_by_text("View run").last.click()
    page.wait_for_url("**/runs/flow-run/**")
    run_id = page.url.split("/runs/flow-run/")[1].split("?")[0]
    started = time.monotonic()
    page.get_by_text("Completed", exact=True).first.wait_for(timeout=RUN_TIMEOUT_MS)
    seconds = time.monotonic() - started
    page.screenshot(path=str(output_dir / "2-run-completed.png"), full_page=True)

    # The artifact is listed on the run and opens to the agent's Markdown result. (The run page
    # does not refresh its artifact list while the run goes on: reload it, as a person would.)
    page.reload()
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("agent-data-analysis", exact=True).first.click()
    page.get_by_text("No model used: no model configured").first.wait_for()
    page.get_by_text(str(data)).first.wait_for()
    page.screenshot(path=str(output_dir / "3-artifact.png"), full_page=True)

    # What the UI showed is what the store holds: the task, run by this flow run, completed.
    engine = create_engine(f"sqlite:///{Path(ui_stack_env['AMAS_HOME']) / 'amas.db'}")
    with Session(engine) as session:
        task = session.scalars(select(AgentTask).where(AgentTask.flow_run_id == run_id)).one()
        assert (task.agent, task.status, task.actor) == ("data_analysis", TaskStatus.completed, "prefect-ui")
    engine.dispose()
    print(f"UI submit -> Completed visible in {seconds:.1f} s; screenshots in {output_dir}")


def test_a_value_the_form_accepts_but_the_agent_cannot_use_fails_naming_the_field(
    ui_stack: tuple[Up, str], browser_page: object, output_dir: Path, tmp_path: Path,
) -> None:
    page = browser_page
    _, api = ui_stack
    ui = api.removesuffix("/api")
    deployment = httpx.get(f"{api}/deployments/name/run-agent/data-analysis", timeout=10).json()
    missing = tmp_path / f"{uuid.uuid4().hex}.csv"

    start_custom_run(page, ui, deployment["id"], path=str(missing))
    page.get_by_text("View run").last.click()
    page.wait_for_url("**/runs/flow-run/**")
    run_id = page.url.split("/runs/flow-run/")[1].split("?")[0]
    page.get_by_text("Failed", exact=True).first.wait_for(timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=str(output_dir / "failed-run.png"), full_page=True)

    state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]
    assert state["type"] == "FAILED"
    assert "path:" in state["message"] and str(missing) in state["message"]
