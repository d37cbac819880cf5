"""The baseline a run is compared against, and the comparison.

A baseline file keeps a run's ``metrics`` (the numbers DVC compares) with the machine, versions
and settings they were measured with. ``compare`` is pure: it flattens both metric trees to
dotted names (``load.p95_ms``, ``stress.phases.rate_10.throughput``) and reports each metric
worse than its baseline by more than ``tolerance`` (a fraction: 0.2 is 20%).

Which way is worse comes from the metric's name (``direction_of``): latencies (``*_ms``),
``error_rate``, ``failed``, ``dropped`` and ``late`` are worse higher; ``throughput``,
``max_throughput``, ``held_rate`` and ``completed`` are worse lower; the rest (target rates,
arrival counts) describe the run rather than judge it and are not compared. Tiny absolute
differences are noise whatever their ratio (0.2 ms to 0.4 ms is not a regression), so a
regression must also exceed an absolute floor (``FLOORS``); that is also how a zero baseline is
handled: an error rate of 0 regresses only when the new one exceeds the floor.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from amas.bench.results import BenchResult, Regression, metrics
from amas.errors import AmasError
from amas.fsutil import atomic_write

__all__ = ["DEFAULT_DIRECTIONS", "FLOORS", "Regression", "compare", "direction_of", "flatten", "load_baseline", "save_baseline"]

Direction = Literal["higher_is_worse", "lower_is_worse", "ignore"]

HIGHER_IS_WORSE = ("error_rate", "failed", "dropped", "late")
LOWER_IS_WORSE = ("throughput", "max_throughput", "held_rate", "completed")
# A stress run is judged by the rate it held and its best throughput; its individual steps, past the
# breaking point especially, vary too much from run to run to compare one by one.
DEFAULT_DIRECTIONS: dict[str, Direction] = {"*.phases.rate_*": "ignore"}

# The smallest difference that counts, per kind of metric: a relative change alone overstates noise
# on tiny numbers and is undefined on a zero baseline.
FLOORS: dict[str, float] = {"_ms": 1.0, "error_rate": 0.001, "failed": 1, "dropped": 1, "late": 1,
                            "throughput": 0.0, "completed": 0, "held_rate": 0.0}

_EPSILON = 1e-9


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics -> ``{"load.p95_ms": 812.0, ...}``; only finite numbers (booleans excluded)."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool) and value == value:
            flat[name] = float(value)
    return flat


def direction_of(metric: str, directions: Mapping[str, Direction] | None = None) -> Direction:
    """Which way ``metric`` (dotted) gets worse.

    ``directions`` (added to ``DEFAULT_DIRECTIONS``) maps a full dotted name, a glob matching the
    name or a prefix of it (``"*.phases.rate_*"``), or a bare leaf name (``"p95_ms"``) to a
    direction; the first of those that matches wins, else the leaf's name decides.
    """
    rules = {**DEFAULT_DIRECTIONS, **(directions or {})}
    leaf = metric.rsplit(".", 1)[-1]
    if metric in rules:
        return rules[metric]
    parts = metric.split(".")
    prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
    for pattern, direction in rules.items():
        if any(ch in pattern for ch in "*?[") and any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            return direction
    if leaf in rules:
        return rules[leaf]
    if leaf.endswith("_ms") or leaf in HIGHER_IS_WORSE:
        return "higher_is_worse"
    if leaf in LOWER_IS_WORSE:
        return "lower_is_worse"
    return "ignore"


def _floor(leaf: str, floors: Mapping[str, float]) -> float:
    if leaf in floors:
        return floors[leaf]
    return floors["_ms"] if leaf.endswith("_ms") and "_ms" in floors else 0.0


def compare(current: Mapping[str, Any], baseline: Mapping[str, Any] | None, *, tolerance: float,
            directions: Mapping[str, Direction] | None = None,
            floors: Mapping[str, float] | None = None) -> list[Regression]:
    """The metrics in ``current`` worse than in ``baseline`` by more than ``tolerance`` (and the floor).

    Exactly ``tolerance`` worse is not a regression. A metric absent from either side, or with no
    direction, is not compared. A lower-is-worse metric with a zero baseline cannot regress.
    """
    if tolerance < 0:
        raise AmasError(f"regression tolerance must be 0 or more (a fraction, 0.2 = 20%), not {tolerance}")
    if not baseline:
        return []
    floors = FLOORS if floors is None else {**FLOORS, **floors}
    now, then = flatten(current), flatten(baseline)
    found = []
    for name in sorted(now.keys() & then.keys()):
        direction = direction_of(name, directions)
        if direction == "ignore":
            continue
        new, old = now[name], then[name]
        worse_by = new - old if direction == "higher_is_worse" else old - new
        if worse_by <= _floor(name.rsplit(".", 1)[-1], floors) + _EPSILON:
            continue
        if old == 0:
            change = None
        else:
            change = worse_by / abs(old)
            if change <= tolerance + _EPSILON:
                continue
        found.append(Regression(metric=name, baseline=old, current=new, change=change, tolerance=tolerance,
                                direction=direction))
    return found


def save_baseline(result: BenchResult, path: Path) -> Path:
    """Keep ``result``'s metrics as the baseline at ``path`` (atomically), with what they were measured on."""
    document = {"schema_version": 1, "saved_at": datetime.now(UTC).isoformat(), "name": result.stem,
                "kind": result.kind, "run_started_at": result.started_at.isoformat(), "machine": result.machine,
                "versions": result.versions, "settings": result.settings, "metrics": metrics(result)}
    text = json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
    return atomic_write(Path(path), lambda sink: sink.write(text.encode()))


def load_baseline(path: Path) -> dict[str, Any] | None:
    """The baseline's metrics (what ``compare`` takes), or None when there is no baseline yet."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AmasError(f"cannot read the benchmark baseline {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise AmasError(f"the benchmark baseline {path} is not JSON ({exc}); delete it or restore it from DVC") from None
    if not isinstance(document, dict) or not isinstance(document.get("metrics"), dict):
        raise AmasError(f"the benchmark baseline {path} has no metrics; save it with save_baseline")
    return document["metrics"]
