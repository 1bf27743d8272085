"""A stand-in for the Task SDK's RuntimeTaskInstance with the attributes the cost provider reads."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

_runs = itertools.count(1)


@dataclass
class FakeTaskInstance:
    dag_id: str = "sales_daily"
    task_id: str = "load_orders"
    run_id: str = field(default_factory=lambda: f"manual__2026-11-{next(_runs):05d}")
    try_number: int = 1
    map_index: int = -1
    state: Any = None
    logical_date: dt.datetime = field(
        default_factory=lambda: dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    )

    def get_template_context(self) -> dict[str, Any]:
        return {"dag_run": SimpleNamespace(logical_date=self.logical_date, run_after=self.logical_date)}
