"""Retention policies: read from ``retention/*.yaml``, checked against the store's real schema.

A policy says, for one category of data, where it lives (``kind``: a store table, Prefect's
flow runs or artifacts, or a prefix of the object storage), what ages it, how many days it
may be kept, and what happens after (delete, anonymize, archive), on which legal basis, and
which legal holds suspend it. Rows whose age field is NULL never become due (an unfinished
task, a subject not yet erased).

Every table and column name a policy gives is looked up in ``Base.metadata`` here, so the
engine that later builds SQL takes its identifiers from the model, never from the YAML text.
A bad file is refused with one line naming the file, the policy and the bad value, and
listing what would have been valid. Nothing here touches the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import Column, DateTime, Enum, MetaData, String, Table, TypeDecorator
from sqlalchemy.exc import CompileError
from sqlalchemy.types import TypeEngine

from amas.db.models import AuditEvent, Base
from amas.errors import ConfigError
from amas.retention.links import case_links, subject_links

PROJECT_DIR = Path(__file__).resolve().parents[2]
APPEND_ONLY_TABLES = frozenset({AuditEvent.__tablename__})
"""Tables whose rows the database refuses to UPDATE or DELETE (triggers in the initial migration)."""
DEFAULT_DIRECTORY = PROJECT_DIR / "retention"

Action = Literal["delete", "anonymize", "archive"]
Kind = Literal["table", "prefect_flow_runs", "prefect_artifacts", "storage"]
KINDS: tuple[str, ...] = Kind.__args__
# The lawful bases of GDPR Art. 6(1), spelled as a reviewer would write them.
LegalBasis = Literal[
    "consent", "contract", "legal obligation", "vital interests", "public task", "legitimate interests"
]
LEGAL_BASES: tuple[str, ...] = LegalBasis.__args__
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Strategy:
    """An anonymisation strategy, looked up by name; ``requires`` says which columns it can change."""

    name: str
    description: str
    requires: Literal["nullable", "text"]
    writes_chars: int = 0


STRATEGIES: Mapping[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("hash_identifier", "replace each value with its keyed HMAC-SHA256 hex digest (AMAS_ERASURE_KEY), "
                 "so rows of one person stay joinable without naming them", "text", 64),
        Strategy("null_personal_fields", "set each listed column to NULL", "nullable"),
        Strategy("redact", f"replace each value with the text {REDACTED!r}", "text", len(REDACTED)),
    )
}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(f"unknown anonymisation strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}") from None


class LegalHold(BaseModel):
    """Suspends a policy for one data subject, one case or the whole category, until a date or for good."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str | None = Field(None, min_length=1, description="external_ref of the data subject whose rows are held.")
    case: str | None = Field(None, min_length=1, description="case_id of the investigation whose rows are held.")
    category: str | None = Field(None, min_length=1, description="The category held as a whole (the policy's own).")
    reason: str = Field(min_length=1, description="Why: the case, request or regulation, for the reviewer.")
    until: date | None = Field(None, description="Last day the hold applies; none means until removed.")

    @model_validator(mode="after")
    def _one_scope(self) -> LegalHold:
        if sum(v is not None for v in (self.subject, self.case, self.category)) != 1:
            raise ValueError("a legal hold names exactly one of 'subject' (an external_ref), 'case' (a case_id) "
                             "or 'category'")
        return self

    @property
    def scope(self) -> str:
        return "subject" if self.subject is not None else "case" if self.case is not None else "category"

    def active_on(self, day: date) -> bool:
        return self.until is None or day <= self.until

    def describe(self) -> str:
        """``subject crm-1 until 2026-06-30 (litigation)``: the words a plan's reason uses."""
        who = {"subject": f"subject {self.subject}", "case": f"case {self.case}", "category": "category"}[self.scope]
        until = f"until {self.until.isoformat()}" if self.until else "until removed"
        return f"{who} {until} ({self.reason})"


class Policy(BaseModel):
    """How long one category of data is kept, and what happens to rows past the limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64, description="Unique name of the data category.")
    description: str = Field(min_length=1, description="What the data is, in words a reviewer understands.")
    table: str | None = Field(None, description="Table of the AMAS store that holds the data (kind table).")
    age_field: str | None = Field(None, description="Timestamp column the age is measured from; rows where it is NULL "
                                  "are never due (kind table).")
    max_age_days: int = Field(gt=0, le=36500, description="Days a row is kept after its age_field.")
    action: Action = Field(description="What happens to rows past the limit.")
    strategy: str | None = Field(None, description="Anonymisation strategy by name (action anonymize only).")
    columns: tuple[str, ...] = Field((), description="Columns the strategy changes (action anonymize only).")
    legal_basis: LegalBasis = Field(description="GDPR Art. 6(1) basis for keeping the data this long.")
    legal_holds: tuple[LegalHold, ...] = Field((), description="Holds that suspend the action.")
    kind: Kind = Field("table", description="Where the data lives: a store table, Prefect's flow runs (with their task "
                       "runs and logs) or artifacts, or objects under a storage prefix.")
    prefix: str | None = Field(None, min_length=1, description="Object storage prefix, e.g. reports/ (kind storage).")
    personal_data: bool | None = Field(None, description="Whether the category holds personal data; empty means: "
                                       "yes when its rows link to a data subject.")

    @model_validator(mode="after")
    def _fits_kind(self) -> Policy:
        if self.kind == "table":
            missing = [name for name in ("table", "age_field") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"kind table needs {' and '.join(repr(m) for m in missing)}")
            if self.prefix is not None:
                raise ValueError("'prefix' is for kind storage only")
            return self
        given = [name for name in ("table", "age_field", "strategy") if getattr(self, name) is not None]
        if self.columns:
            given.append("columns")
        if given:
            raise ValueError(f"kind {self.kind} takes no {', '.join(repr(g) for g in given)}; it ages by the "
                             f"{'object modification time' if self.kind == 'storage' else 'Prefect timestamps'}")
        if self.action != "delete":
            raise ValueError(f"kind {self.kind} supports action delete only (got {self.action!r})")
        if (self.kind == "storage") != (self.prefix is not None):
            raise ValueError("kind storage needs a 'prefix'" if self.kind == "storage"
                             else "'prefix' is for kind storage only")
        scoped = sorted({h.scope for h in self.legal_holds if h.scope != "category"})
        if scoped:
            raise ValueError(f"kind {self.kind} has no data subjects or cases; hold it by 'category' instead of "
                             f"{' or '.join(repr(s) for s in scoped)}")
        return self

    def active_holds(self, day: date) -> tuple[LegalHold, ...]:
        return tuple(h for h in self.legal_holds if h.active_on(day))

    def category_hold_on(self, day: date) -> LegalHold | None:
        return next((h for h in self.legal_holds if h.category is not None and h.active_on(day)), None)

    def category_held_on(self, day: date) -> bool:
        return self.category_hold_on(day) is not None

    def held_subjects_on(self, day: date) -> frozenset[str]:
        return frozenset(h.subject for h in self.legal_holds if h.subject is not None and h.active_on(day))

    def held_cases_on(self, day: date) -> frozenset[str]:
        return frozenset(h.case for h in self.legal_holds if h.case is not None and h.active_on(day))

    @property
    def destructive(self) -> bool:
        """Whether applying it removes or changes data (archiving the append-only audit log does neither)."""
        return not (self.action == "archive" and self.table in APPEND_ONLY_TABLES)


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: tuple[Policy, ...]


@dataclass(frozen=True)
class PolicySet:
    """Every policy of a directory, in file order, with the file each came from."""

    directory: Path
    policies: tuple[Policy, ...]
    sources: Mapping[str, Path] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.policies)

    def __iter__(self) -> Iterator[Policy]:
        return iter(self.policies)

    @property
    def categories(self) -> list[str]:
        return [p.category for p in self.policies]

    def get(self, category: str) -> Policy:
        for policy in self.policies:
            if policy.category == category:
                return policy
        raise ConfigError(f"no retention policy for category {category!r}; categories: {', '.join(self.categories)}")


def cutoff(policy: Policy, now: datetime) -> datetime:
    """The instant before which a row's age_field makes it due: ``now - max_age_days``, in UTC."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("cutoff needs an aware datetime; the store keeps UTC")
    return now.astimezone(UTC) - timedelta(days=policy.max_age_days)


def _base_type(column: Column[Any]) -> TypeEngine[Any]:
    kind = column.type
    return kind.impl_instance if isinstance(kind, TypeDecorator) else kind


def _type_name(column: Column[Any]) -> str:
    try:
        return str(_base_type(column).compile())
    except (CompileError, NotImplementedError):  # the generic dialect cannot render it; use the class name
        return type(_base_type(column)).__name__.upper()


def _is_text(column: Column[Any]) -> bool:
    # Enum is a String subtype in SQLAlchemy, but its CHECK refuses any value but its members.
    kind = _base_type(column)
    return isinstance(kind, String) and not isinstance(kind, Enum)


def _columns(table: Table) -> str:
    return ", ".join(table.columns.keys())


def policy_problems(policy: Policy, metadata: MetaData = Base.metadata) -> list[str]:
    """What is wrong with ``policy`` against the schema in ``metadata``; empty when it is usable."""
    if policy.kind == "storage":
        return _prefix_problems(policy.prefix or "")
    if policy.kind != "table":
        return []
    table = metadata.tables.get(policy.table or "")
    if table is None:
        return [f"table {policy.table!r} is not in the store; valid tables: {', '.join(sorted(metadata.tables))}"]
    problems: list[str] = []
    age = table.columns.get(policy.age_field)
    if age is None:
        problems.append(f"age_field {policy.age_field!r} is not a column of table {table.name!r}; "
                        f"its columns: {_columns(table)}")
    elif not isinstance(_base_type(age), DateTime):
        stamps = [c.name for c in table.columns if isinstance(_base_type(c), DateTime)]
        problems.append(f"age_field {policy.age_field!r} of table {table.name!r} is {_type_name(age)}, not a timestamp; "
                        f"its timestamp columns: {', '.join(stamps) or '(none)'}")

    if policy.action != "anonymize":
        if policy.strategy is not None or policy.columns:
            problems.append(f"strategy and columns are for action anonymize only; this policy's action is {policy.action}")
    elif policy.strategy is None:
        problems.append(f"action anonymize needs a strategy; valid strategies: {', '.join(STRATEGIES)}")
    elif policy.strategy not in STRATEGIES:
        problems.append(f"strategy {policy.strategy!r} is not registered; valid strategies: {', '.join(STRATEGIES)}")
    elif not policy.columns:
        problems.append("action anonymize needs the columns to change (columns: [...])")
    else:
        problems.extend(_column_problems(policy, table, STRATEGIES[policy.strategy]))

    if table.name in APPEND_ONLY_TABLES and policy.action != "archive":
        problems.append(f"table {table.name!r} is append-only (the database refuses UPDATE and DELETE); "
                        f"use action archive, which exports old rows to object storage and keeps them")

    for hold in policy.legal_holds:
        if hold.category is not None and hold.category != policy.category:
            problems.append(f"legal hold on category {hold.category!r} is listed under policy {policy.category!r}; "
                            f"list it under policy {hold.category!r}")
        elif hold.subject is not None and not subject_links(table, metadata):
            problems.append(f"legal hold on subject {hold.subject!r}: rows of table {table.name!r} name no data "
                            "subject; hold the category instead")
        elif hold.case is not None and not case_links(table):
            problems.append(f"legal hold on case {hold.case!r}: rows of table {table.name!r} name no case; "
                            "hold the category instead")
    return problems


def _prefix_problems(prefix: str) -> list[str]:
    from amas.storage.base import InvalidKey, validate_prefix

    try:
        validate_prefix(prefix)
    except InvalidKey as exc:
        return [f"prefix: {exc}"]
    if not prefix.endswith("/"):
        return [f"prefix {prefix!r} must end with '/' so it names a folder, not the start of any key"]
    return []


def _column_problems(policy: Policy, table: Table, strategy: Strategy) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for name in policy.columns:
        column = table.columns.get(name)
        if name in seen:
            problems.append(f"column {name!r} is listed twice")
        seen.add(name)
        if column is None:
            problems.append(f"column {name!r} is not a column of table {table.name!r}; its columns: {_columns(table)}")
        elif column.primary_key:
            problems.append(f"column {name!r} is the primary key of table {table.name!r}; anonymize cannot change it")
        elif name == policy.age_field:
            problems.append(f"column {name!r} is the age_field; anonymizing it would lose when the row became due")
        elif strategy.requires == "nullable" and not column.nullable:
            problems.append(f"column {name!r} of table {table.name!r} is NOT NULL; "
                            f"strategy {strategy.name!r} needs nullable columns")
        elif strategy.requires == "text":
            kind = _base_type(column)
            if not _is_text(column):
                problems.append(f"column {name!r} of table {table.name!r} is {_type_name(column)}; "
                                f"strategy {strategy.name!r} needs text columns")
            elif isinstance(kind, String) and kind.length is not None and kind.length < strategy.writes_chars:
                problems.append(f"column {name!r} of table {table.name!r} holds {kind.length} characters; "
                                f"strategy {strategy.name!r} writes {strategy.writes_chars}")
    return problems


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice (the second would silently win otherwise)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        if isinstance(key, str):
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _shown(path: Path) -> str:
    for base in (PROJECT_DIR, Path.cwd()):
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{_shown(path)}: cannot read: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{_shown(path)}: {line}not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{_shown(path)}: not valid YAML: {str(exc).splitlines()[0]}") from None


def _policy_label(raw: Any, index: int) -> str:
    try:
        category = raw["policies"][index]["category"]
    except (KeyError, IndexError, TypeError):
        category = None
    return f"policy {category!r}" if isinstance(category, str) else f"policy #{index + 1}"


def _validation_line(exc: ValidationError, raw: Any) -> str:
    """The first pydantic error as ``policy 'x': field: what is wrong``."""
    errors = exc.errors()
    # A misspelt field also makes the right one "missing"; the misspelling explains both.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = list(err["loc"])
    where, model = "", PolicyFile
    if len(loc) >= 2 and loc[0] == "policies" and isinstance(loc[1], int):
        where, loc, model = f"{_policy_label(raw, loc[1])}: ", loc[2:], Policy
        if loc and loc[0] == "legal_holds":
            model = LegalHold
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if err["type"] == "extra_forbidden":
        return f"{where}unknown field {loc[-1]!r}; valid fields: {', '.join(model.model_fields)}"
    if err["type"] == "missing":
        return f"{where}missing required field {path!r}"
    message = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float | date) and not isinstance(got, bool) else ""
    return f"{where}{path or 'policy'}: {message}{shown}"


def load_file(path: Path, metadata: MetaData = Base.metadata) -> tuple[Policy, ...]:
    """The policies of one file, each checked against ``metadata``; ``ConfigError`` on the first problem."""
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{_shown(path)}: expected a mapping with a 'policies' list, got {type(raw).__name__}")
    try:
        parsed = PolicyFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{_shown(path)}: {_validation_line(exc, raw)}") from None
    if not parsed.policies:
        raise ConfigError(f"{_shown(path)}: lists no policies; add one under 'policies:' or remove the file")
    for policy in parsed.policies:
        problems = policy_problems(policy, metadata)
        if problems:
            raise ConfigError(f"{_shown(path)}: policy {policy.category!r}: {problems[0]}")
    return parsed.policies


def load_policies(directory: Path = DEFAULT_DIRECTORY, metadata: MetaData = Base.metadata) -> PolicySet:
    """Every policy in ``directory/*.yaml``, validated against the store schema; categories are unique."""
    if not directory.is_dir():
        raise ConfigError(f"{_shown(directory)}: retention policy directory not found")
    strays = sorted(directory.glob("*.yml"))
    if strays:
        raise ConfigError(f"{_shown(strays[0])}: only *.yaml files are read; rename it to {strays[0].stem}.yaml")
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise ConfigError(f"{_shown(directory)}: no retention policy files (*.yaml)")
    policies: list[Policy] = []
    sources: dict[str, Path] = {}
    for path in files:
        for policy in load_file(path, metadata):
            if policy.category in sources:
                raise ConfigError(f"{_shown(path)}: policy {policy.category!r}: category {policy.category!r} "
                                  f"is already defined in {_shown(sources[policy.category])}")
            sources[policy.category] = path
            policies.append(policy)
    return PolicySet(directory=directory, policies=tuple(policies), sources=sources)
