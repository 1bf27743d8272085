"""What the API answers, for its OpenAPI page. The documents are built by the same code as the CLI's
`-o json` output (cli/report.py, cli/budgets.py) and sent as built: these models describe them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

MONEY = 'an exact decimal string, e.g. "0.000019172" (null: unpriced, never 0)'


class UnpricedCause(BaseModel):
    source: str
    metric: str
    reason: str = Field(description="why the usage has no price")
    count: int = Field(description="lines with this cause")
    fix: str | None = Field(description="the option or price book entry that fixes it")


class DataRange(BaseModel):
    first: str = Field(description="first day (YYYY-MM-DD) the ledger has data for, under the filters")
    last: str


class CostReport(BaseModel):
    """`airflow-cost report -o json`: task-try costs per group and currency."""

    ledger: str = Field(description="the ledger read (URL without its password)")
    since: str = Field(description="start of the period, included (ISO 8601, UTC)")
    until: str = Field(description="end of the period, excluded")
    by: list[str] = Field(description='the group keys each row has, e.g. ["dag_id"]')
    filters: dict[str, list[str]] = Field(description="dag, task, source filters given")
    rows: list[dict[str, Any]] = Field(
        description="one per group and currency, costliest first: the group keys, amount ("
        + MONEY
        + "), currency, status (estimated, reconciled, partial, unpriced), lines, unpriced"
    )
    total: list[dict[str, Any]] = Field(description="one row per currency (and one for unpriced usage)")
    omitted_rows: int = Field(description="rows past `top`, still in the total")
    unpriced: list[UnpricedCause]
    data_range: DataRange | None = Field(
        None, description="only when the period holds no data: where the ledger has some"
    )


class Overview(BaseModel):
    """What the Costs page shows of a period, read in one pass over its lines: each report is the
    document `/api/report` (and `airflow-cost report -o json`) gives for its grouping."""

    reports: dict[str, CostReport] = Field(
        description="by `source`, `day,source` or `day,team` (as `stack`), `dag` and `task` (the `top` "
        "costliest), `dag,day`, `task,day` (the rows of the tasks `task` lists only; the others' rows "
        "in `omitted_rows`), `team`, `owner`"
    )
    previous: dict[str, Any] = Field(
        description="the period of the same length just before `since`: its `since`, `until` and "
        "`total` (currency, amount (" + MONEY + "), lines, unpriced), as `/api/report` totals it"
    )


class StorageReport(BaseModel):
    """`airflow-cost report storage -o json`: imported storage costs per group and currency."""

    ledger: str
    since: str = Field(description="first billing day, included (YYYY-MM-DD)")
    until: str = Field(description="billing day after the last one")
    by: list[str]
    rows: list[dict[str, Any]] = Field(description="the group keys, amount, currency, credits, rows")
    total: list[dict[str, Any]]
    omitted_rows: int
    data_range: DataRange | None = None


class Coverage(BaseModel):
    """`airflow-cost report coverage -o json`: the reconciled bill per group and currency."""

    ledger: str
    since: str = Field(description="first billing day, included (YYYY-MM-DD)")
    until: str = Field(description="billing day after the last one")
    by: str
    rows: list[dict[str, Any]] = Field(
        description="per group and currency: billed (resources Airflow uses), attributed (to task tries), "
        "unattributed (idle included; attributed + unattributed = billed), coverage (attributed / billed), "
        "untouched (resources no task used, not in billed); " + MONEY
    )
    total: list[dict[str, Any]]
    accuracy: list[dict[str, Any]] = Field(
        description="per source and currency: lines, estimated, reconciled, ratio (reconciled / estimated)"
    )
    idle: list[dict[str, Any]] = Field(description="the pools with the most idle or unattributed money")


class BudgetStatuses(BaseModel):
    """`airflow-cost budgets -o json`: where each budget stands."""

    ledger: str
    budgets_file: str
    evaluated_at: str
    rows: list[dict[str, Any]] = Field(
        description="per budget: budget, scope, period, period_start, period_end, timezone, week_start, "
        "spent, forecast, amount (" + MONEY + "), currency, percent, crossed"
    )
    total: list[dict[str, Any]]
    details: list[dict[str, Any]] = Field(
        description="per budget: top_contributors, anomalies, forecast notes, other currencies, "
        "unpriced lines, storage costs"
    )


class TryLine(BaseModel):
    source: str
    metric: str
    quantity: str = Field(description="the usage priced, an exact decimal in `unit`")
    unit: str
    resource: str | None
    external_id: str | None = Field(description="the query, job or statement id at the source")
    console_url: str | None = Field(
        description="the platform console's page of external_id (null: no console page, or a part of "
        "its address unknown)"
    )
    amount: str | None = Field(description=MONEY)
    currency: str | None
    method: str | None = Field(
        description="how it was priced: metered, list_price, runtime_rate or allocated"
    )
    status: str = Field(description="estimated, reconciled or unpriced")
    price_amount: str | None = Field(description="the price per `price_unit`")
    price_unit: str | None
    price_ref: str | None = Field(description="the price book entry")
    price_source_url: str | None
    unpriced_reason: str | None


class TryCost(BaseModel):
    """One task try of a DAG run, with its lines."""

    task_id: str
    run_id: str
    map_index: int
    try_number: int
    state: str
    status: str
    start_time: str
    end_time: str
    owner: str | None
    team: str | None
    lines: list[TryLine]
    total: list[dict[str, Any]] = Field(description="currency, amount (" + MONEY + "), lines")


class DagRunCost(BaseModel):
    """A DAG run's cost: its tries' lines, and its cost per task as `/api/report` gives it."""

    ledger: str
    dag_id: str
    run_id: str
    since: str = Field(description="the end of the run's first recorded try")
    until: str = Field(description="just after the end of its last")
    tries: list[TryCost] = Field(description="every recorded try of the run, in the order they ended")
    by_task: CostReport = Field(
        description="`airflow-cost report --by task --dag DAG_ID --run RUN_ID --since SINCE --until UNTIL "
        "-o json`"
    )
    total: list[dict[str, Any]] = Field(description="the run's total per currency: by_task's total")


class TaskInstanceCost(BaseModel):
    """One task try's cost lines."""

    ledger: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    state: str = Field(description="the try's state when it ended")
    status: str = Field(description="the try's cost status")
    start_time: str
    end_time: str
    owner: str | None
    team: str | None
    lines: list[TryLine]
    total: list[dict[str, Any]] = Field(description="currency, amount (" + MONEY + "), lines")
