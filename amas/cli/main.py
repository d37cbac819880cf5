"""The ``amas`` command: thin commands over the engine and the same flows the Prefect UI runs.

A user's mistake (``AmasError``) is printed as one line on stderr with a non-zero exit code and
no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from enum import StrEnum
from types import FrameType
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from amas.cli.backup_cmd import backup_app, restore_cmd
from amas.cli.bench_cmd import bench_app
from amas.cli.gdpr_cmd import gdpr_app
from amas.cli.retention_cmd import audit_app, retention_app
from amas.config import Settings, env_name, get_settings
from amas.errors import AmasError

app = typer.Typer(
    name="amas",
    help="AMAS Ops: agent flows, restore-verified backups, retention and GDPR, lineage and data checks on Prefect 3.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the AMAS store's schema.", no_args_is_help=True)
agents_app = typer.Typer(help="The registered agents.", no_args_is_help=True)
lineage_app = typer.Typer(help="Follow datasets through the recorded OpenLineage events.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(agents_app, name="agents")
app.add_typer(lineage_app, name="lineage")
pipeline_app = typer.Typer(help="The DVC data pipeline: generate, validate, classify, clean, features.",
                           no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(gdpr_app, name="gdpr")
app.add_typer(retention_app, name="retention")
app.add_typer(audit_app, name="audit")
app.add_typer(backup_app, name="backup")
app.command("restore")(restore_cmd)
app.add_typer(bench_app, name="bench")

console = Console()
err_console = Console(stderr=True)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


def use_stack_api(settings: Settings) -> None:
    """Point Prefect (imported later) at the stack's API and home, unless the caller chose one.

    Raise naming the fix when nothing answers there, so a flow never falls back to a
    temporary server of its own.
    """
    os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    from amas.stack import api_healthy

    if not api_healthy(os.environ["PREFECT_API_URL"]):
        raise AmasError(f"no Prefect API at {os.environ['PREFECT_API_URL']}: start the stack with `amas up`")


def flow_result(state: Any, flow_name: str) -> Any:
    """The flow run's return value; its failure as one ``AmasError`` line (an ``AmasError`` as is)."""
    try:
        return state.result()
    except AmasError:
        raise
    except Exception as exc:
        raise AmasError(f"{flow_name} ended {state.name}: {' '.join(str(exc).split())}") from None


@config_app.command("show")
def config_show(fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json")) -> None:
    """Print the effective settings; secrets are shown as ********** or (not set)."""
    shown = get_settings().redacted()
    if fmt is OutputFormat.json:
        print(json.dumps(shown, indent=2, default=str))
        return
    table = Table("setting", "value", title="AMAS settings (secrets redacted)")
    for concern, values in shown.items():
        for field, value in values.items():
            table.add_row(env_name(concern, field), "" if value is None else str(value))
    console.print(table)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision (default: the newest).")) -> None:
    """Migrate the store to the newest schema (safe to run again)."""
    from amas.db.audit import append_event
    from amas.db.migrate import upgrade
    from amas.db.session import check_connection, get_engine, session_scope

    engine = get_engine()
    check_connection(engine)
    before, after = upgrade(engine, revision)
    if before == after:
        console.print(f"store already at revision {after} ({engine.dialect.name})")
        return
    with session_scope(engine) as session:
        append_event(session, actor="cli", action="db.upgrade", entity_type="store",
                     details={"from": before, "to": after})
    console.print(f"store migrated {before or '(empty)'} -> {after} ({engine.dialect.name})")


@agents_app.command("list")
def agents_list() -> None:
    """List the agents the registry finds, with their parameters."""
    from amas.registry import load_agents

    table = Table("agent", "description", "parameters (default)")
    for name, agent in load_agents().items():
        fields = []
        for field_name, info in agent.Input.model_fields.items():
            default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
            fields.append(f"{field_name} ({default})")
        table.add_row(name, agent.description, "\n".join(fields))
    console.print(table)


class FailOn(StrEnum):
    never = "never"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


@agents_app.command("run")
def agents_run(
    name: str = typer.Argument(help="The agent's name (see `amas agents list`)."),
    param: list[str] = typer.Option([], "--param", "-p", help="key=value, repeatable; repeat a list field to add items."),
    priority: int = typer.Option(50, help="Higher runs first where tasks queue (low 10, normal 50, high 80, critical 100)."),
    fail_on: FailOn = typer.Option(FailOn.never, "--fail-on", help="Exit 1 when a finding is at least this severe."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json"),
) -> None:
    """Run one agent through its run-agent flow (the same flow the Prefect UI starts) and print the result.

    Parameters are checked before anything runs: a bad one exits 2 naming the field.
    """
    import getpass

    from amas.agent_tasks import parse_param_pairs, validate_params
    from amas.registry import SEVERITY_ORDER, Severity, get_agent

    settings = get_settings()
    agent = get_agent(name)
    params = validate_params(agent, parse_param_pairs(agent, param))
    if not 0 <= priority <= 1000:
        raise AmasError(f"--priority: must be between 0 and 1000 (higher runs first), got {priority}")
    from amas.db.migrate import require_current_schema
    from amas.db.session import check_connection, get_engine

    engine = get_engine(settings)
    check_connection(engine)
    require_current_schema(engine)
    use_stack_api(settings)
    from flows.agent_flows import AGENT_FLOWS

    state = AGENT_FLOWS[agent.name](params=params, priority=priority, requested_by=f"cli:{getpass.getuser()}",
                                    return_state=True)
    if not state.is_completed():
        raise AmasError(f"run-agent {agent.name} ended {state.name}: {' '.join(str(state.message).split())}")
    outcome = state.result()
    if fmt is OutputFormat.json:
        print(json.dumps(outcome, indent=2, default=str))
    else:
        console.print(f"[bold]{agent.name}[/] task {outcome['task_id']}")
        console.print(outcome["summary"], markup=False, highlight=False)
        counts = outcome["findings"]["by_severity"]
        console.print("findings: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v) if any(counts.values())
                      else "findings: none")
        for key in outcome["evidence"]:
            console.print(f"  evidence: {key}", markup=False, highlight=False)
        llm = outcome["llm"]
        console.print(f"model: {llm['provider']}/{llm['model']}" if llm["used"] else f"model: none ({llm['reason']})")
    worst = outcome["findings"]["worst"]
    if fail_on is not FailOn.never and worst and SEVERITY_ORDER[Severity(worst)] >= SEVERITY_ORDER[Severity(fail_on.value)]:
        err_console.print(f"amas: {agent.name} found {worst} findings (--fail-on {fail_on.value})")
        raise typer.Exit(1)


class LineageFormat(StrEnum):
    text = "text"
    json = "json"
    dot = "dot"


@lineage_app.command("show")
def lineage_show(
    dataset: str = typer.Argument(help="namespace:name, or a bare name when only one namespace has it."),
    upstream: bool = typer.Option(False, "--upstream", help="Only what it was made from."),
    downstream: bool = typer.Option(False, "--downstream", help="Only what was made from it."),
    depth: int = typer.Option(0, min=0, help="Stop after this many steps (0 = no limit)."),
    fmt: LineageFormat = typer.Option(LineageFormat.text, "--format", help="text, json or dot (Graphviz)"),
) -> None:
    """Which runs produced DATASET and what was derived from it, from the local lineage file."""
    from amas.lineage.graph import RENDERERS, EventLog, LineageGraph, load_runs, read_events

    settings = get_settings()
    path = settings.lineage_file
    if settings.lineage.transport != "file":
        raise AmasError(f"AMAS_LINEAGE_TRANSPORT is {settings.lineage.transport}: `amas lineage show` reads the "
                        "local file transport's events; query your OpenLineage receiver (Marquez) instead")
    log = load_runs(read_events(path)) if path.exists() else EventLog(runs=[], skipped_lines=0)
    graph = LineageGraph.from_log(log)
    start = graph.resolve(dataset)
    directions = [d for d, wanted in (("upstream", upstream), ("downstream", downstream)) if wanted] or [
        "upstream", "downstream"]
    for direction in directions:
        found = graph.walk(start, direction, depth=depth or None)
        print(RENDERERS[fmt.value](start, direction, found))
    if log.skipped_lines:
        err_console.print(f"lineage: skipped {log.skipped_lines} unreadable line(s) in {path}")


class PipelineStage(StrEnum):
    generate = "generate"
    validate = "validate"
    classify = "classify"
    clean = "clean"
    features = "features"


@pipeline_app.command("run")
def pipeline_run(
    force: bool = typer.Option(False, "--force", help="Run every stage, even those whose inputs did not change."),
    push: bool = typer.Option(True, "--push/--no-push", help="Push the data to the DVC remote afterwards."),
    until: PipelineStage | None = typer.Option(None, "--until", help="Stop after this stage."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show which stages would run, and why."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json"),
) -> None:
    """Run the data-pipeline flow (the same flow the Prefect UI starts): changed stages only, then push.

    A failed validation stops at that stage, prints the failed expectations with samples and exits 1.
    """
    from amas.pipeline import dvc
    from amas.pipeline.runner import check_params, project_root
    from amas.pipeline.stages import stages_until

    root = project_root()
    check_params(root)
    if dry_run:
        names = stages_until(until.value if until else None)
        plan = []
        upstream_runs = False
        for name in names:
            reasons = ["--force"] if force else dvc.stage_changes(root, name)
            plan.append({"stage": name, "runs": bool(reasons) or ("maybe" if upstream_runs else False),
                         "why": reasons or (["if an earlier stage's outputs change"] if upstream_runs else [])})
            upstream_runs = upstream_runs or bool(reasons)
        if fmt is OutputFormat.json:
            print(json.dumps(plan, indent=2))
            return
        table = Table("stage", "runs?", "why")
        for row in plan:
            why = row["why"]
            shown = "; ".join(why[:2]) + (f"; and {len(why) - 2} more" if len(why) > 2 else "")
            runs = {True: "yes", False: "no", "maybe": "maybe"}[row["runs"]]
            table.add_row(row["stage"], runs, shown or "up to date")
        console.print(table)
        return
    settings = get_settings()
    use_stack_api(settings)
    from flows.pipeline_flow import STOPPED, PipelineInput, data_pipeline

    params = PipelineInput(force=force, push=push, until=until.value if until else None, workspace=str(root))
    with console.status("running the data pipeline…"):
        state = data_pipeline(params=params, return_state=True)
    if state.name == STOPPED:
        for line in _stored_quality_failures(settings, state.state_details.flow_run_id):
            print(line, file=sys.stderr)
        raise AmasError(f"data-pipeline stopped: {state.message}")
    outcome = flow_result(state, "data-pipeline")
    if fmt is OutputFormat.json:
        print(json.dumps(outcome, indent=2, default=str))
        return
    for item in outcome["ran"]:
        console.print(f"[bold]{item['stage']}[/]: {item['summary']}", highlight=False)
    if outcome["skipped"]:
        console.print(f"up to date: {', '.join(outcome['skipped'])}")
    table = Table("dataset", "stage", "md5", "bytes", "changed")
    table.columns[0].overflow = "fold"
    for row in outcome["versions"]:
        table.add_row(row["dataset"], row["stage"], (row["md5"] or "")[:12], f"{row['bytes']:,}",
                      "yes" if row["changed in this run"] else "")
    console.print(table)
    if outcome["pushed"] is not None:
        console.print(f"pushed {outcome['pushed']} file(s) to the DVC remote")



def _stored_quality_failures(settings: Settings, flow_run_id: object) -> list[str]:
    """One line per failed suite, from the reports the flow stored (``quality/<flow run>/``)."""
    from amas.quality import QualityReport
    from amas.storage import open_storage

    storage = open_storage(settings)
    lines = []
    for info in storage.list(f"quality/{flow_run_id}/"):
        for item in json.loads(storage.get(info.key)):
            report = QualityReport.model_validate(item)
            if not report.success:
                lines.append(report.summary_line())
    return lines


@app.command()
def doctor() -> None:
    """Pre-flight checks of everything AMAS needs; each failure names its fix."""
    from amas.doctor import run_checks

    findings = run_checks(get_settings())
    table = Table("check", "", "detail", "fix")
    for f in findings:
        table.add_row(f.name, "[green]ok[/]" if f.ok else "[red]FAIL[/]", f.detail, f.fix)
    console.print(table)
    failed = [f.name for f in findings if not f.ok]
    if failed:
        err_console.print(f"doctor: {len(failed)} check(s) failed: {', '.join(failed)}")
        raise typer.Exit(1)
    console.print("[green]all checks passed[/]")


@app.command()
def health() -> None:
    """Run the amas-health flow now, against the stack's Prefect API; exit 1 if unhealthy."""
    settings = get_settings()
    use_stack_api(settings)
    from flows.health_flow import health as health_flow

    state = health_flow(return_state=True)
    if state.is_completed():
        report = state.result()
        console.print(report.to_markdown())
        return
    raise AmasError(f"amas-health ended {state.name}: {state.message}")


class _Stop(Exception):
    pass


@app.command()
def up(
    timeout: float = typer.Option(0, help="Stop by itself after this many seconds (0 = run until Ctrl-C)."),
) -> None:
    """Start the local stack in the foreground: store, Prefect server, work pool, deployments, worker.

    Ctrl-C stops everything. Running it again later is safe.
    """
    settings = get_settings()
    from amas.db.audit import append_event
    from amas.db.migrate import upgrade
    from amas.db.session import check_connection, get_engine, session_scope
    from amas.stack import bring_up

    def stop_signal(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, stop_signal)
    signal.signal(signal.SIGTERM, stop_signal)

    engine = get_engine()
    check_connection(engine)
    before, after = upgrade(engine)
    with session_scope(engine) as session:
        append_event(session, actor="cli", action="stack.up", entity_type="stack",
                     details={"profile": settings.core.profile.value, "store_revision": after})
    console.print(f"[bold]amas up[/] profile={settings.core.profile.value} home={settings.core.home}")
    console.print(f"  store at revision {after} ({engine.dialect.name}){'' if before == after else ' (migrated)'}")
    stack = None
    try:
        with console.status("starting…") as status:
            def step(message: str) -> None:
                status.update(message)
                console.print(f"  {message}")

            stack = bring_up(settings, step=step)
        ui = settings.prefect_api_url.removesuffix("/api")
        console.print(f"\n[bold green]AMAS is up.[/] Prefect UI: [link={ui}]{ui}[/link]")
        console.print(f"  logs: {settings.core.home / 'logs'}   stop: Ctrl-C\n")
        started = time.monotonic()
        while True:
            exited = stack.first_exited()
            if exited is not None:
                raise AmasError(f"{exited.name} exited unexpectedly (log {exited.log_path}):\n{exited.log_tail()}")
            if timeout and time.monotonic() - started >= timeout:
                console.print(f"stopping after --timeout {timeout:g} s")
                break
            time.sleep(0.5)
    except _Stop as stop:
        console.print(f"\n{stop} received: stopping the stack…")
    finally:
        # A second Ctrl-C while stopping must not leave children behind half-stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if stack is not None:
            stack.stop()
            console.print("stack stopped")


def run() -> None:
    """Console-script entry point: one line and an exit code for a user's mistake."""
    try:
        # Without standalone mode click returns typer.Exit's code instead of exiting.
        code = app(standalone_mode=False)
    except AmasError as exc:
        err_console.print(f"amas: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("amas: aborted")
        sys.exit(130)
    except Exception as exc:  # click's usage errors arrive here in standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
