"""The outcome of costing one task try: what the ledger stores and the facet shows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.pricing.model import CostLine, Unpriced
from airflow_cost_provider.pricing.money import Money, totals_by_currency

ResultStatus = Literal["estimated", "reconciled", "partial"]


@dataclass(frozen=True)
class CostResult:
    task_try: TaskTry
    capture_id: str
    state: str
    start_time: dt.datetime
    end_time: dt.datetime
    hostname: str | None
    lines: tuple[CostLine, ...]
    unpriced: tuple[Unpriced, ...]

    @property
    def status(self) -> ResultStatus:
        if self.unpriced:
            return "partial"
        if self.lines and all(line.status == "reconciled" for line in self.lines):
            return "reconciled"
        return "estimated"

    @property
    def totals(self) -> dict[str, Decimal]:
        """One total per currency; currencies are never added together."""
        return totals_by_currency(Money(line.amount, line.currency) for line in self.lines)
