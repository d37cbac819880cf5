"""Check lineage events against the official OpenLineage JSON Schemas, and catch them in memory.

Import from any test: ``validate_event(event)`` raises ``jsonschema.ValidationError`` when an
event (a dict as sent on the wire, or an openlineage event object) breaks the spec, and
``InMemoryTransport`` collects what an emitter sends so tests assert on real events.

The schemas are vendored under ``tests/fixtures/openlineage-spec`` (see its README); their
``$id`` URLs point at openlineage.io and are resolved from those files, never fetched.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from openlineage.client.event_v2 import RunEvent
from openlineage.client.serde import Serde
from openlineage.client.transport.transport import Transport
from referencing import Registry, Resource

SPEC_DIR = Path(__file__).parent / "fixtures" / "openlineage-spec" / "spec"
CORE_SCHEMA_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
OPENLINEAGE_SCHEMAS = "https://openlineage.io/spec/"

_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


class InMemoryTransport(Transport):
    """Keeps every event it is given, like the OpenLineage client's own test transport."""

    kind = "memory"

    def __init__(self) -> None:
        self.events: list[RunEvent] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def as_dicts(self) -> list[dict[str, Any]]:
        """The events as a receiver gets them: serialised to JSON and parsed back."""
        return [to_wire(event) for event in self.events]


def to_wire(event: Any) -> dict[str, Any]:
    """An event object as the JSON a transport writes (the client's serializer)."""
    wire: dict[str, Any] = json.loads(Serde.to_json(event))
    return wire


def _format_checker() -> FormatChecker:
    """The default checks (date-time, uuid) plus ``uri``, whose checker is an optional extra."""
    checker = FormatChecker()

    @checker.checks("uri")
    def _is_uri(value: object) -> bool:
        if not isinstance(value, str):
            return True
        scheme = urlsplit(value).scheme
        return bool(scheme) and _URI_SCHEME.fullmatch(scheme) is not None and not any(c.isspace() for c in value)

    return checker


@functools.cache
def registry() -> Registry[Any]:
    """Every vendored schema, under its ``$id``."""
    resources = []
    for path in sorted(SPEC_DIR.rglob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


def _validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, registry=registry(), format_checker=_format_checker())


def _facets(event: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Every facet in the event as (where, key, facet)."""
    for key, facet in (event.get("run", {}).get("facets") or {}).items():
        yield "run.facets", key, facet
    for key, facet in (event.get("job", {}).get("facets") or {}).items():
        yield "job.facets", key, facet
    for role, own in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        for index, item in enumerate(event.get(role) or []):
            for group in ("facets", own):
                for key, facet in (item.get(group) or {}).items():
                    yield f"{role}[{index}].{group}", key, facet


def _check_facet(where: str, key: str, facet: Mapping[str, Any]) -> None:
    """Validate one facet against the schema its ``_schemaURL`` names, under the right key.

    A facet file's root schema lists the key the facet must be stored under (``schema``,
    ``version``, ``parent``...); its ``$defs`` entry is what the facet itself must satisfy.
    Facets from outside openlineage.io (custom facets) are held to the core BaseFacet only.
    """
    schema_url = facet.get("_schemaURL", "")
    if not schema_url.startswith(OPENLINEAGE_SCHEMAS) or schema_url.startswith(CORE_SCHEMA_ID):
        return
    document_id = schema_url.split("#", 1)[0]
    try:
        document = registry().contents(document_id)
    except LookupError:
        raise ValidationError(
            f"{where}.{key}: no vendored schema for {schema_url}; add it to {SPEC_DIR}"
        ) from None
    allowed_keys = set(document.get("properties", {}))
    if key not in allowed_keys:
        raise ValidationError(
            f"{where}.{key}: a facet with schema {document_id} must be named one of {sorted(allowed_keys)}"
        )
    _validator({"$ref": schema_url}).validate(facet)


def validate_event(event: Mapping[str, Any] | Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``event`` conforms to the spec and its facets."""
    wire = dict(event) if isinstance(event, Mapping) else to_wire(event)
    # The root schema is a oneOf over the three event kinds, whose failure only says "not valid
    # under any of the given schemas"; checking the intended kind first names the bad field.
    kind = "RunEvent" if "run" in wire else "DatasetEvent" if "dataset" in wire else "JobEvent"
    _validator({"$ref": f"{CORE_SCHEMA_ID}#/$defs/{kind}"}).validate(wire)
    _validator(registry().contents(CORE_SCHEMA_ID)).validate(wire)
    for where, key, facet in _facets(wire):
        _check_facet(where, key, facet)
