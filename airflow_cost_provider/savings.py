"""What dbt's reuse saved: a node that was not built because nothing changed (reused, or skipped)
saves what building it costs, estimated as the average of its last N priced builds before it.

Reads the ledger lines capture/dbt.py writes (one per node per run, with `dbt_unique_id` and
`status` attributes). Per node, day (UTC day the task try ended) and currency: the reuses, the
builds, the reuse rate = reuses / (reuses + builds), the amount saved and the average per reuse.
A reuse with no priced build before it (in the look-back) saves an unknown amount: counted in
`unestimated`, never as zero."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_cost_provider.ledger.schema import lines, task_runs, usage
from airflow_cost_provider.ledger.store import from_nanos
from airflow_cost_provider.report import dbt_node_id

BUILT = {"success", "error"}
REUSED = {"reused", "skipped"}
DEFAULT_BUILDS = 5
# how far before the period the builds that price its reuses are read
LOOKBACK = dt.timedelta(days=90)
GROUPINGS = {"model,day": ("model", "day"), "model": ("model",), "day": ("day",)}


@dataclass(frozen=True)
class SavingsRow:
    keys: dict[str, object]
    currency: str | None  # None: reuses no priced build estimates
    reuses: int
    builds: int
    saved: Decimal | None
    estimated_reuses: int  # the reuses `saved` adds up

    @property
    def reuse_rate(self) -> Decimal:
        return (Decimal(self.reuses) / Decimal(self.reuses + self.builds)).quantize(Decimal("0.001"))

    @property
    def per_reuse(self) -> Decimal | None:
        if self.saved is None or not self.estimated_reuses:
            return None
        return from_nanos(_rounded(Decimal(_nanos(self.saved)) / self.estimated_reuses))


@dataclass(frozen=True)
class SavingsReport:
    keys: tuple[str, ...]
    rows: list[SavingsRow]
    totals: list[tuple[str, Decimal | None, int]]  # currency, saved, the reuses it estimates
    unestimated: int


def _nanos(amount: Decimal) -> int:
    return int(amount.scaleb(9))


def _rounded(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


def savings_report(
    engine: Engine,
    since: dt.datetime,
    until: dt.datetime,
    *,
    by: str = "model,day",
    builds: int = DEFAULT_BUILDS,
    dags: Sequence[str] = (),
) -> SavingsReport:
    keys = GROUPINGS[by]
    node = dbt_node_id()
    status = usage.c.attributes["status"].as_string()
    where = [node.is_not(None), task_runs.c.end_time >= since - LOOKBACK, task_runs.c.end_time < until]
    if dags:
        where.append(task_runs.c.dag_id.in_(list(dags)))
    query = (
        sa.select(
            node.label("node"),
            status.label("status"),
            task_runs.c.end_time,
            lines.c.amount_nanos,
            lines.c.currency,
        )
        .select_from(
            lines.join(task_runs, lines.c.task_run_id == task_runs.c.id).join(
                usage, usage.c.id == lines.c.usage_id
            )
        )
        .where(*where)
        .order_by(task_runs.c.end_time, lines.c.id)
    )
    # group -> currency -> [reuses, builds, saved nanos, estimated reuses]
    groups: dict[tuple, dict[str | None, list[int]]] = defaultdict(dict)
    recent: dict[str, deque] = defaultdict(lambda: deque(maxlen=builds))
    with engine.connect() as conn:
        for row in conn.execute(query):
            end = (
                row.end_time
                if isinstance(row.end_time, dt.datetime)
                else dt.datetime.fromisoformat(str(row.end_time))
            )
            end = end if end.tzinfo else end.replace(tzinfo=dt.timezone.utc)
            in_period = end >= since
            history = recent[row.node]
            group = tuple({"model": row.node, "day": end.date()}[key] for key in keys)
            if row.status in BUILT:
                if in_period:
                    _counts(groups[group], None)[1] += 1
                if row.amount_nanos is not None:
                    history.append((int(row.amount_nanos), row.currency))
            elif row.status in REUSED and in_period:
                currency = history[-1][1] if history else None
                counts = _counts(groups[group], currency)
                counts[0] += 1
                if currency is not None:
                    amounts = [nanos for nanos, of in history if of == currency]
                    counts[2] += _rounded(Decimal(sum(amounts)) / len(amounts))
                    counts[3] += 1
    rows, totals, unestimated = [], defaultdict(lambda: [0, 0]), 0
    for group, by_currency in groups.items():
        builds_in_group = by_currency.pop(None, [0, 0, 0, 0])
        if not by_currency:
            unestimated += builds_in_group[0]
            rows.append(_row(keys, group, None, builds_in_group, builds_in_group[1]))
            continue
        for index, (currency, counts) in enumerate(sorted(by_currency.items())):
            # the group's builds and unestimated reuses are shown on its first currency's row
            if index == 0:
                counts[0] += builds_in_group[0]
                unestimated += builds_in_group[0]
            rows.append(_row(keys, group, currency, counts, builds_in_group[1] if index == 0 else 0))
            totals[currency][0] += counts[2]
            totals[currency][1] += counts[3]
    rows.sort(key=lambda r: (str(r.keys.get("day", "")), -(r.saved or 0), str(r.keys.get("model", ""))))
    return SavingsReport(
        keys=keys,
        rows=rows,
        totals=[
            (currency, from_nanos(nanos), reuses) for currency, (nanos, reuses) in sorted(totals.items())
        ],
        unestimated=unestimated,
    )


def _counts(by_currency: dict[str | None, list[int]], currency: str | None) -> list[int]:
    return by_currency.setdefault(currency, [0, 0, 0, 0])


def _row(keys, group, currency, counts, builds) -> SavingsRow:
    reuses, _, saved, estimated = counts
    return SavingsRow(
        keys=dict(zip(keys, group, strict=True)),
        currency=currency,
        reuses=reuses,
        builds=builds,
        saved=from_nanos(saved) if estimated else None,
        estimated_reuses=estimated,
    )
