"""A statistics look-up for the deferral test: importable by path in the process that resumes the task,
as an instrumentation's resolve function is."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from airflow_cost_provider.instrumentation.base import unresolved_usage
from airflow_cost_provider.pricing.model import Usage


@dataclasses.dataclass
class ProbeJob:
    job_id: str
    bytes_billed: int

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage("bigquery", self.job_id, reason)


def resolve_probe_jobs(items: list[ProbeJob], timeout: float) -> list[Usage]:
    return [
        Usage(
            source="bigquery",
            metric="bytes_billed",
            quantity=Decimal(item.bytes_billed),
            unit="byte",
            external_id=item.job_id,
            attributes={"pricing_model": "on_demand"},
        )
        for item in items
    ]
