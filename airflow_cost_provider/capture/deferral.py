"""A capture carried across a deferral: the task resumes in a new process, maybe on another worker,
so what it used before deferring (usage, and statistics still to fetch) goes to the ledger as JSON.

Pending look-up items travel when they are dataclasses of plain values; their class and resolve
function are named by import path. Anything else becomes unpriced usage with the reason now.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
from decimal import Decimal
from typing import Any

from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage

_PLAIN = (str, int, float, bool, type(None))


def _path(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _load(path: str) -> Any:
    module, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def usage_to_json(usage: Usage) -> dict[str, Any]:
    return {
        "source": usage.source,
        "metric": usage.metric,
        "quantity": str(usage.quantity),
        "unit": usage.unit,
        "resource": usage.resource,
        "external_id": usage.external_id,
        "start_time": _time(usage.start_time),
        "end_time": _time(usage.end_time),
        "attributes": {k: _plain_value(v) for k, v in usage.attributes.items()},
    }


def _plain_value(value: Any) -> Any:
    """A JSON value as it is (a list of them too: an aggregate's first ids), anything else as text."""
    if isinstance(value, _PLAIN) or (isinstance(value, list) and all(isinstance(i, _PLAIN) for i in value)):
        return value
    return str(value)


def usage_from_json(data: dict[str, Any]) -> Usage:
    def when(value: str | None) -> dt.datetime | None:
        return dt.datetime.fromisoformat(value) if value else None

    return Usage(
        source=data["source"],
        metric=data["metric"],
        quantity=Decimal(data["quantity"]),
        unit=data["unit"],
        resource=data.get("resource"),
        external_id=data.get("external_id"),
        start_time=when(data.get("start_time")),
        end_time=when(data.get("end_time")),
        attributes=dict(data.get("attributes") or {}),
    )


def snapshot(usages: list[Usage], pending: dict[Any, list[Any]]) -> dict[str, Any]:
    """The JSON document kept in the ledger while the task is deferred."""
    kept_usage = list(usages)
    kept_pending = []
    for resolve, items in pending.items():
        for item in items:
            fields = dataclasses.asdict(item) if dataclasses.is_dataclass(item) else None
            if fields is not None and _plain(fields):
                kept_pending.append({"resolve": _path(resolve), "item": _path(type(item)), "fields": fields})
            else:
                kept_usage.append(item.unresolved("its statistics could not be carried across the deferral"))
    return {"version": 1, "usage": [usage_to_json(u) for u in kept_usage], "pending": kept_pending}


def restore(document: dict[str, Any]) -> tuple[list[Usage], list[tuple[Any, Any]]]:
    """(usage, [(resolve, item), ...]) from a snapshot; an item that no longer loads is kept unpriced."""
    usages = [usage_from_json(u) for u in document.get("usage", [])]
    pending = []
    for entry in document.get("pending", []):
        try:
            pending.append((_load(entry["resolve"]), _load(entry["item"])(**entry["fields"])))
        except Exception as error:  # a provider upgraded between deferral and resume
            usages.append(
                Usage(
                    source=str(entry.get("fields", {}).get("source", "unknown")),
                    metric="queries",
                    quantity=Decimal(1),
                    unit="query",
                    attributes={UNPRICED_HINT_ATTRIBUTE: f"could not restore after the deferral: {error}"},
                )
            )
    return usages, pending
