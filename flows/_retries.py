"""When a Prefect task may be retried: for transient causes only (a service down, a timeout).

Bad input and bugs fail at once; retrying them would only repeat the failure later.
"""

from __future__ import annotations

from typing import Any

from amas.agent_tasks import is_transient


def retry_if_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """A ``retry_condition_fn``: retry when the failed state's exception is transient."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False
