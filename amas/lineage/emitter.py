"""OpenLineage events for AMAS jobs, sent through the openlineage-python client.

Lineage is evidence about the work, not the work: a receiver that is down, a full disk or a
bad facet must never fail a backup or an erasure. So every emission is wrapped: a failure is
logged once at WARNING (scrubbed of the API key and URL passwords), counted in
``LineageEmitter.failed`` and reported as ``False``; it never raises.

The transport comes from ``LineageSettings``: ``file`` appends every event as one JSON line
to a single file, ``http`` posts to an OpenLineage receiver (Marquez) with a bearer token,
``console`` logs each event at INFO on ``openlineage.client.transport.console``, and
``disabled`` sends nothing. Tests inject their own in-memory ``Transport``.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    Dataset,
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import (
    DatasetFacet,
    JobFacet,
    RunFacet,
    dataset_version_dataset,
    error_message_run,
    parent_run,
    schema_dataset,
)
from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import (
    ApiKeyTokenProvider,
    HttpConfig,
    HttpTransport,
    TokenProvider,
)
from openlineage.client.transport.noop import NoopConfig, NoopTransport
from openlineage.client.transport.transport import Transport
from openlineage.client.uuid import generate_new_uuid

from amas.errors import ConfigError
from amas.lineage.wire import JsonlFileTransport

if TYPE_CHECKING:
    from amas.config import Settings

log = logging.getLogger(__name__)

PRODUCER = "https://github.com/amas-ops/amas"
"""The ``producer`` URI of every event and facet: names the code that wrote them."""

HTTP_RETRY: dict[str, Any] = {
    "total": 2,
    "connect": 0,
    "read": 0,
    "other": 0,
    "status": 2,
    "backoff_factor": 0.5,
    "status_forcelist": [502, 503, 504],
    "allowed_methods": ["POST"],
}
"""Retry only when the receiver answers that it is busy or restarting (502/503/504).

The client's default (5 retries of everything, ~10 s of back-off) would hold a flow for each
event while a receiver is down, and urllib3 logs a WARNING for every connection-error retry,
which would break the one-warning-per-lost-event rule. A refused or timed-out connection is
reported at once; a 5xx is retried twice, which urllib3 logs only at DEBUG.
"""

_CLIENT_CONFIG: dict[str, Any] = {
    "facets": {"source_code_location": {"disabled": True}, "environment_variables": []},
}
"""The client can add the git ``origin`` URL (which may carry a token) and chosen
environment variables to every event; AMAS events carry neither, whatever the environment or
an ``openlineage.yml`` says."""

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
_MAX_LOGGED_ERROR = 500

SchemaFields = Sequence[tuple[str, str]]
_D = TypeVar("_D", bound=Dataset)


@dataclass(frozen=True)
class ParentRun:
    """The run that started this one, e.g. the Prefect flow run around a task.

    ``run_id`` must be a UUID (Prefect's flow run ids are); ``namespace`` defaults to the
    emitter's namespace.
    """

    run_id: str | uuid.UUID
    job_name: str
    namespace: str | None = None


def dataset(
    namespace: str,
    name: str,
    *,
    schema: SchemaFields | None = None,
    version: str | None = None,
    facets: Mapping[str, DatasetFacet] | None = None,
) -> Dataset:
    """Describe a dataset, with a schema facet and a dataset-version facet when given.

    Follow the OpenLineage naming conventions: ``namespace`` is where the data lives
    (``file``, ``s3://bucket``, ``postgres://host:5432``) and ``name`` the path or table
    within it. ``schema`` is ``[(column, type), ...]``; ``version`` is e.g. the DVC md5.

    The result is role-neutral: where it is passed as an input it is sent as an
    ``InputDataset``, as an output an ``OutputDataset``. Pass an ``InputDataset`` or
    ``OutputDataset`` yourself to attach input- or output-only facets.
    """
    all_facets: dict[str, DatasetFacet] = {}
    if schema is not None:
        all_facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(name=column, type=kind)
                for column, kind in schema
            ],
            producer=PRODUCER,
        )
    if version is not None:
        all_facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=version, producer=PRODUCER
        )
    all_facets.update(facets or {})
    return Dataset(namespace=namespace, name=name, facets=all_facets)


def as_input(item: Dataset) -> InputDataset:
    """The dataset as an ``InputDataset``, keeping its facets."""
    if isinstance(item, InputDataset):
        return item
    return InputDataset(namespace=item.namespace, name=item.name, facets=dict(item.facets or {}))


def as_output(item: Dataset) -> OutputDataset:
    """The dataset as an ``OutputDataset``, keeping its facets."""
    if isinstance(item, OutputDataset):
        return item
    return OutputDataset(namespace=item.namespace, name=item.name, facets=dict(item.facets or {}))


def _merge(existing: Iterable[_D], added: Iterable[_D]) -> list[_D]:
    """Append datasets, replacing an earlier one with the same identity (the last wins)."""
    by_key = {(item.namespace, item.name): item for item in existing}
    for item in added:
        by_key[(item.namespace, item.name)] = item
    return list(by_key.values())


@dataclass
class LineageRun:
    """A run in progress, yielded by ``LineageEmitter.run``.

    Datasets added here are carried by the final COMPLETE, FAIL or ABORT event, so a job can
    report outputs it only learns about while running (a backup's object key, a report's path).
    """

    run_id: str
    job_name: str
    inputs: list[InputDataset] = field(default_factory=list)
    outputs: list[OutputDataset] = field(default_factory=list)
    run_facets: dict[str, RunFacet] = field(default_factory=dict)

    def add_input(self, item: Dataset) -> None:
        self.inputs = _merge(self.inputs, [as_input(item)])

    def add_output(self, item: Dataset) -> None:
        self.outputs = _merge(self.outputs, [as_output(item)])

    def add_run_facet(self, name: str, facet: RunFacet) -> None:
        self.run_facets[name] = facet


class LineageEmitter:
    """Builds OpenLineage run events for AMAS jobs and sends them without ever raising."""

    def __init__(
        self,
        transport: Transport,
        *,
        namespace: str = "amas",
        secrets: Iterable[str] = (),
    ) -> None:
        """Wrap ``transport`` (any openlineage ``Transport``; ``NoopTransport`` disables).

        ``secrets`` are strings to blank out of logged errors and error facets (the API key).
        """
        self.namespace = namespace
        self.emitted = 0
        self.failed = 0
        self._secrets = tuple(s for s in secrets if s)
        self._client = OpenLineageClient(transport=transport, config=copy.deepcopy(_CLIENT_CONFIG))
        # OPENLINEAGE_DISABLED=true makes the client swap any transport for a no-op, so ask the
        # client, not the argument, whether events will really be sent.
        self.enabled = self._client.transport.kind != NoopTransport.kind
        self._counter_lock = threading.Lock()
        # A file transport opens, appends and closes per event; one writer at a time keeps a
        # large event's line from interleaving with another thread's.
        self._write_lock: threading.Lock | None = (
            threading.Lock() if isinstance(self._client.transport, FileTransport) else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LineageEmitter:
        """The emitter the settings describe; ``ConfigError`` when they cannot work."""
        config = settings.lineage
        secrets: list[str] = []
        transport: Transport
        if config.transport == "file":
            transport = _file_transport(settings.lineage_file)
        elif config.transport == "http":
            if not config.url:
                raise ConfigError("AMAS_LINEAGE_URL is required when AMAS_LINEAGE_TRANSPORT=http")
            api_key = config.api_key.get_secret_value() if config.api_key else None
            if api_key:
                secrets.append(api_key)
            auth = ApiKeyTokenProvider({"api_key": api_key}) if api_key else TokenProvider({})
            try:
                transport = HttpTransport(
                    HttpConfig(
                        url=config.url,
                        timeout=config.timeout_seconds,
                        auth=auth,
                        retry=dict(HTTP_RETRY),
                    )
                )
            except ValueError:
                raise ConfigError(
                    "AMAS_LINEAGE_URL is not a usable URL; expected e.g. http://marquez:5000"
                ) from None
        elif config.transport == "console":
            # The console transport logs at INFO; without this an INFO-level handler on the root
            # logger would still not see it when the root logger's level is WARNING.
            logging.getLogger("openlineage.client.transport.console").setLevel(logging.INFO)
            transport = ConsoleTransport(ConsoleConfig())
        else:
            transport = NoopTransport(NoopConfig())
        return cls(transport, namespace=config.namespace, secrets=secrets)

    def emit(
        self,
        event_type: RunState | str,
        job_name: str,
        run_id: str | uuid.UUID,
        *,
        inputs: Iterable[Dataset] = (),
        outputs: Iterable[Dataset] = (),
        run_facets: Mapping[str, RunFacet] | None = None,
        job_facets: Mapping[str, JobFacet] | None = None,
        parent: ParentRun | None = None,
    ) -> bool:
        """Send one run event; ``True`` when the transport accepted it.

        ``False`` when lineage is disabled (nothing counted) or the event could not be built
        or sent (logged, counted in ``failed``). Never raises.
        """
        if not self.enabled:
            return False
        label = event_type.value if isinstance(event_type, RunState) else str(event_type)
        try:
            facets = dict(run_facets or {})
            if parent is not None:
                facets["parent"] = self._parent_facet(parent)
            event = RunEvent(
                eventType=RunState(event_type.upper() if isinstance(event_type, str) else event_type),
                eventTime=datetime.now(UTC).isoformat(),
                run=Run(runId=str(run_id), facets=facets),
                job=Job(namespace=self.namespace, name=job_name, facets=dict(job_facets or {})),
                inputs=[as_input(item) for item in inputs],
                outputs=[as_output(item) for item in outputs],
                producer=PRODUCER,
            )
            if self._write_lock is None:
                self._client.emit(event)
            else:
                with self._write_lock:
                    self._client.emit(event)
        # Lineage must never break the job it records, whatever went wrong in building or sending.
        except Exception as exc:
            with self._counter_lock:
                self.failed += 1
            log.warning(
                "OpenLineage %s event for job %s (run %s) was not delivered: %s: %s",
                label,
                job_name,
                run_id,
                type(exc).__name__,
                self._scrub(str(exc))[:_MAX_LOGGED_ERROR],
            )
            return False
        with self._counter_lock:
            self.emitted += 1
        return True

    @contextmanager
    def run(
        self,
        job_name: str,
        *,
        inputs: Iterable[Dataset] = (),
        outputs: Iterable[Dataset] = (),
        parent: ParentRun | None = None,
        run_id: str | uuid.UUID | None = None,
        job_facets: Mapping[str, JobFacet] | None = None,
    ) -> Iterator[LineageRun]:
        """Record the block as one run: START, then COMPLETE, FAIL or ABORT.

        An exception in the block sends FAIL with an ``errorMessage`` facet and is re-raised;
        an interruption (``KeyboardInterrupt``, task cancellation) sends ABORT and is
        re-raised. ``run_id`` defaults to a new UUIDv7; pass the Prefect run id to join the two.
        """
        handle = LineageRun(
            run_id=str(run_id if run_id is not None else generate_new_uuid()),
            job_name=job_name,
            inputs=_merge([], (as_input(item) for item in inputs)),
            outputs=_merge([], (as_output(item) for item in outputs)),
        )
        self._emit_run(RunState.START, handle, parent, job_facets)
        try:
            yield handle
        except Exception as exc:
            handle.add_run_facet("errorMessage", self.error_facet(exc))
            self._emit_run(RunState.FAIL, handle, parent, job_facets)
            raise
        except BaseException:
            self._emit_run(RunState.ABORT, handle, parent, job_facets)
            raise
        self._emit_run(RunState.COMPLETE, handle, parent, job_facets)

    def error_facet(self, exc: BaseException) -> error_message_run.ErrorMessageRunFacet:
        """The ``errorMessage`` facet for ``exc``, with URL passwords and known secrets removed."""
        return error_message_run.ErrorMessageRunFacet(
            message=self._scrub(f"{type(exc).__name__}: {exc}"),
            programmingLanguage="PYTHON",
            producer=PRODUCER,
        )

    def close(self) -> None:
        """Release the transport (the HTTP session); emitting afterwards opens a new one."""
        try:
            self._client.close(timeout=0)
        # Closing is best effort, like emitting.
        except Exception as exc:
            log.warning("closing the OpenLineage transport failed: %s", self._scrub(str(exc)))

    def _emit_run(
        self,
        state: RunState,
        handle: LineageRun,
        parent: ParentRun | None,
        job_facets: Mapping[str, JobFacet] | None,
    ) -> bool:
        return self.emit(
            state,
            handle.job_name,
            handle.run_id,
            inputs=handle.inputs,
            outputs=handle.outputs,
            run_facets=handle.run_facets,
            job_facets=job_facets,
            parent=parent,
        )

    def _parent_facet(self, parent: ParentRun) -> parent_run.ParentRunFacet:
        return parent_run.ParentRunFacet(
            run=parent_run.Run(runId=str(parent.run_id)),
            job=parent_run.Job(namespace=parent.namespace or self.namespace, name=parent.job_name),
            producer=PRODUCER,
        )

    def _scrub(self, text: str) -> str:
        text = _URL_PASSWORD.sub(r"\g<head>***@", text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _file_transport(path: Path) -> FileTransport:
    """Append every event to ``path`` (one JSON object per line), creating its directory.

    Without ``append`` the client writes one timestamped file per event.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # Not fatal here: each emission will fail, be logged and be counted.
        log.warning("cannot create the lineage directory %s: %s", path.parent, exc)
    return JsonlFileTransport(FileConfig(log_file_path=str(path), append=True))
