"""The Costs JSON API, mounted by the plugin at /cost in Airflow's api-server: the endpoints under
/cost/api/, their OpenAPI page at /cost/api/docs, and the pages that read them (pages.py): /cost/, which
the navigation links to, and a task try's lines at /cost/task-instance.

Every document is built by the code that builds the CLI's `-o json` output (cli/report.py,
cli/budgets.py) and parsed by the same functions (cli/common.py), so the page, the CLI and the API
agree to the nano-unit and name bad input alike."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from airflow_cost_provider.api import models, pages
from airflow_cost_provider.api.access import ReadableDags, read_every_dag, read_task_instances
from airflow_cost_provider.cli import CliError
from airflow_cost_provider.cli.common import day_period_of, open_ledger, period_of
from airflow_cost_provider.cli.output import Document, as_document, as_records
from airflow_cost_provider.version import __version__

# A report reads at most this long a period: beyond it a request could scan the whole ledger.
MAX_PERIOD_DAYS = 400

SINCE = "start of the period, included: YYYY-MM-DD (midnight UTC) or an ISO date and time; default: 30 days before until"
UNTIL = "end of the period, excluded (same forms); default: now"
BAD_INPUT = {400: {"description": "bad input: the message names the parameter and what is allowed"}}
REFUSED = {
    401: {"description": "no Airflow token (bearer or the UI's cookie)"},
    403: {"description": "a bad token, or no permission to read the DAGs it needs"},
}
NO_LEDGER = {503: {"description": "the ledger (or the budgets file) cannot be read"}}


def create_app() -> FastAPI:
    app = FastAPI(
        title="Airflow cost provider",
        version=__version__,
        description="What Airflow task runs cost, from the cost ledger: the documents `airflow-cost report "
        "-o json` and `airflow-cost budgets -o json` print, for an authenticated Airflow user (a JWT "
        "from Airflow's `POST /auth/token` as a bearer token, or the UI's cookie). Task costs are shown "
        "only for the DAGs the user may read; budgets and storage costs need read access to every DAG. "
        "Money is an exact decimal string.",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    for path, endpoint in [
        ("/", pages.costs_page),
        ("/task-instance", pages.task_instance_page),
        ("/dag-run", pages.dag_run_page),
        ("/static/vendor/plotly.min.js", pages.plotly_js),
        ("/static/{name}", pages.static_file),
    ]:
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/api/report",
        report,
        methods=["GET"],
        response_model=None,
        responses={200: {"model": models.CostReport}, **BAD_INPUT, **REFUSED, **NO_LEDGER},
        summary="Task-try costs per group (airflow-cost report)",
    )
    app.add_api_route(
        "/api/overview",
        overview,
        methods=["GET"],
        response_model=None,
        responses={200: {"model": models.Overview}, **BAD_INPUT, **REFUSED, **NO_LEDGER},
        summary="The Costs page's reports of a period, read together",
    )
    app.add_api_route(
        "/api/report/storage",
        storage_report,
        methods=["GET"],
        response_model=None,
        dependencies=[Depends(read_every_dag)],
        responses={200: {"model": models.StorageReport}, **BAD_INPUT, **REFUSED, **NO_LEDGER},
        summary="Imported storage costs per group (airflow-cost report storage)",
    )
    app.add_api_route(
        "/api/coverage",
        coverage,
        methods=["GET"],
        response_model=None,
        dependencies=[Depends(read_every_dag)],
        responses={200: {"model": models.Coverage}, **BAD_INPUT, **REFUSED, **NO_LEDGER},
        summary="How much of the bill reconcile attributed to task tries (airflow-cost report coverage)",
    )
    app.add_api_route(
        "/api/budgets",
        budgets,
        methods=["GET"],
        response_model=None,
        dependencies=[Depends(read_every_dag)],
        responses={
            200: {"model": models.BudgetStatuses},
            404: {"description": "no budgets file, or no budget of that name"},
            **REFUSED,
            **NO_LEDGER,
        },
        summary="Where each budget stands (airflow-cost budgets status)",
    )
    app.add_api_route(
        "/api/task-instance",
        task_instance,
        methods=["GET"],
        response_model=None,
        dependencies=[Depends(read_task_instances)],
        responses={
            200: {"model": models.TaskInstanceCost},
            404: {"description": "the ledger has no such task try"},
            **REFUSED,
            **NO_LEDGER,
        },
        summary="One task try's cost lines",
    )
    app.add_api_route(
        "/api/dag-run",
        dag_run,
        methods=["GET"],
        response_model=None,
        dependencies=[Depends(read_task_instances)],
        responses={
            200: {"model": models.DagRunCost},
            404: {"description": "the ledger has no try of that run"},
            **REFUSED,
            **NO_LEDGER,
        },
        summary="A DAG run's cost: its tries' lines and its cost per task",
    )
    return app


def _bad_input(error: Exception) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=" ".join(str(error).split()))


def _ledger() -> tuple[Engine, str]:
    try:
        return open_ledger(None)
    except CliError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"ledger: {error}") from None


def _check_length(days: float, first: object, last: object) -> None:
    if days > MAX_PERIOD_DAYS:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"the period {first} to {last} is {days:g} days long: at most {MAX_PERIOD_DAYS} per "
            "request (narrow since/until)",
        )


def _json(doc: Document) -> JSONResponse:
    return JSONResponse(as_document(doc))


def report(
    visible: ReadableDags,
    by: Annotated[
        str,
        Query(
            description="dag, task, run, try, source, day, owner, team, tag or label:KEY, or a comma list "
            "such as dag,day"
        ),
    ] = "task",
    since: Annotated[str | None, Query(description=SINCE)] = None,
    until: Annotated[str | None, Query(description=UNTIL)] = None,
    dag_id: Annotated[list[str] | None, Query(description="only this DAG (repeatable)")] = None,
    task_id: Annotated[list[str] | None, Query(description="only this task (repeatable)")] = None,
    run_id: Annotated[list[str] | None, Query(description="only this DAG run (repeatable)")] = None,
    source: Annotated[
        list[str] | None, Query(description="only this source, e.g. bigquery (repeatable)")
    ] = None,
    top: Annotated[
        int | None, Query(ge=1, description="only the N costliest rows (the total keeps all)")
    ] = None,
) -> JSONResponse:
    """The document `airflow-cost report --by BY -o json` prints for the same period and filters,
    with the costs of the DAGs the user may read only."""
    from airflow_cost_provider.cli.report import task_report_document
    from airflow_cost_provider.report import ReportError, group_keys

    try:
        group_keys(by)
        first, last = period_of(since, until, names=("since", "until"))
    except (ReportError, CliError) as error:
        raise _bad_input(f"by: {error}" if isinstance(error, ReportError) else error) from None
    _check_length((last - first) / dt.timedelta(days=1), first.isoformat(), last.isoformat())
    engine, shown_url = _ledger()
    doc, _ = task_report_document(
        engine,
        shown_url,
        by,
        first,
        last,
        dags=dag_id or (),
        tasks=task_id or (),
        sources=source or (),
        runs=run_id or (),
        top=top,
        visible_dags=visible,
    )
    return _json(doc)


def overview(
    visible: ReadableDags,
    since: Annotated[str | None, Query(description=SINCE)] = None,
    until: Annotated[str | None, Query(description=UNTIL)] = None,
    dag_id: Annotated[list[str] | None, Query(description="only this DAG (repeatable)")] = None,
    task_id: Annotated[list[str] | None, Query(description="only this task (repeatable)")] = None,
    source: Annotated[
        list[str] | None, Query(description="only this source, e.g. bigquery (repeatable)")
    ] = None,
    stack: Annotated[Literal["source", "team"], Query(description="the daily series' second key")] = "source",
    top: Annotated[int, Query(ge=1, le=100, description="how many DAGs and tasks to list")] = 10,
) -> JSONResponse:
    """The reports the Costs page shows, each the document `/api/report?by=...` gives (same rows,
    same amounts), read in one pass over the period's lines instead of one per report; and the
    totals of the period of the same length before it (what `/api/report` totals for it)."""
    from airflow_cost_provider.cli.report import report_document
    from airflow_cost_provider.report import cost_reports, period_totals

    try:
        first, last = period_of(since, until, names=("since", "until"))
    except CliError as error:
        raise _bad_input(error) from None
    length = last - first
    _check_length(length / dt.timedelta(days=1), first.isoformat(), last.isoformat())
    engine, shown_url = _ledger()
    filters = {"dags": dag_id or (), "tasks": task_id or (), "sources": source or ()}
    wanted = {
        "source": None,
        f"day,{stack}": None,
        "dag": top,
        "dag,day": None,
        "task": top,
        "task,day": None,
        "team": None,
        "owner": None,
    }
    found = cost_reports(
        engine,
        list(wanted),
        first,
        last,
        tops=list(wanted.values()),
        visible_dags=visible,
        listed_only=("task,day", "task"),
        **filters,
    )
    before = period_totals(engine, first - length, first, visible_dags=visible, **filters)
    before_doc = Document(
        meta={},
        head={},
        columns=["currency", "amount", "lines", "unpriced"],
        rows=[],
        total=[[total.currency, total.amount, total.lines, total.unpriced] for total in before],
        money={"amount"},
    )

    def document(result, top: int | None) -> dict:
        doc, _ = report_document(result, shown_url, top=top, for_a_user=visible is not None, **filters)
        return as_document(doc)

    return JSONResponse(
        {
            "reports": {by: document(result, wanted[by]) for by, result in zip(wanted, found, strict=True)},
            "previous": {
                "since": (first - length).isoformat(),
                "until": first.isoformat(),
                "total": as_records(before_doc, before_doc.total),
            },
        }
    )


def storage_report(
    by: Annotated[
        str,
        Query(
            description="resource, service, usage-class, day, provider or dataset (the share of a bucket's cost "
            "allocated to each dataset), or a comma list such as resource,day"
        ),
    ] = "resource",
    since: Annotated[
        str | None, Query(description="first billing day, YYYY-MM-DD; default: 30 days before until")
    ] = None,
    until: Annotated[
        str | None, Query(description="billing day after the last one; default: tomorrow (UTC)")
    ] = None,
    top: Annotated[
        int | None, Query(ge=1, description="only the N costliest rows (the total keeps all)")
    ] = None,
) -> JSONResponse:
    """The document `airflow-cost report storage --by BY -o json` prints."""
    from airflow_cost_provider.cli.report import storage_report_document
    from airflow_cost_provider.report import ReportError, storage_group_keys

    try:
        storage_group_keys(by)
        first, last = day_period_of(since, until, names=("since", "until"))
    except (ReportError, CliError) as error:
        raise _bad_input(f"by: {error}" if isinstance(error, ReportError) else error) from None
    _check_length((last - first).days, first, last)
    engine, shown_url = _ledger()
    doc, _ = storage_report_document(engine, shown_url, by, first, last, top=top)
    return _json(doc)


def coverage(
    by: Annotated[str, Query(description="provider, service, resource, day or source")] = "provider",
    since: Annotated[
        str | None, Query(description="first billing day, YYYY-MM-DD; default: 30 days before until")
    ] = None,
    until: Annotated[
        str | None, Query(description="billing day after the last one; default: tomorrow (UTC)")
    ] = None,
) -> JSONResponse:
    """The document `airflow-cost report coverage --by BY -o json` prints: the bill of the resources
    Airflow uses, what went to task tries, what stayed idle or unattributed, the resources no task
    touched, the idlest pools and each source's accuracy."""
    from airflow_cost_provider.cli.reconcile import coverage_document
    from airflow_cost_provider.reconcile.coverage import GROUPINGS

    if by not in GROUPINGS:
        raise _bad_input(f"by: unknown grouping {by!r}: choose from {', '.join(GROUPINGS)}")
    try:
        first, last = day_period_of(since, until, names=("since", "until"))
    except CliError as error:
        raise _bad_input(error) from None
    _check_length((last - first).days, first, last)
    engine, shown_url = _ledger()
    return _json(coverage_document(engine, shown_url, by, first, last))


def budgets(
    budget: Annotated[list[str] | None, Query(description="only this budget (repeatable)")] = None,
    period: Annotated[
        Literal["current", "previous"],
        Query(description="the running period of each budget, or the one before it"),
    ] = "current",
) -> JSONResponse:
    """The document `airflow-cost budgets status -o json` prints."""
    from airflow_cost_provider.cli import budgets as command

    try:
        path = command._path(None)
    except CliError as error:
        # the API takes no --budgets: only the configured file applies
        detail = str(error).replace(" or give --budgets PATH", "", 1)
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=detail) from None
    try:
        defined = command._load(path)
    except CliError as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=" ".join(str(error).split())
        ) from None
    try:
        chosen = command._selected(defined, budget or [])
    except CliError as error:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=str(error).replace("--budget ", "budget ", 1)
        ) from None
    engine, shown_url = _ledger()
    return _json(command.status_document(engine, shown_url, path, chosen, period, command._now(), "json"))


def task_instance(
    dag_id: str,
    task_id: str,
    run_id: str,
    map_index: Annotated[int, Query(ge=-1, description="-1 for a task that is not mapped")] = -1,
    try_number: Annotated[int | None, Query(ge=1, description="default: the last try recorded")] = None,
) -> JSONResponse:
    """One task try's cost lines: the usage each prices (quantity and unit, the source's id for it),
    how it was priced and at what price, or why it has none."""
    from airflow_cost_provider.report import try_cost

    engine, shown_url = _ledger()
    found = try_cost(engine, dag_id, task_id, run_id, map_index, try_number)
    if found is None:
        which = f"try {try_number}" if try_number is not None else "any try"
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"the ledger has no cost for {which} of {dag_id}.{task_id} (run {run_id!r}, "
            f"map_index {map_index})",
        )
    return JSONResponse({"ledger": shown_url, "dag_id": found.dag_id, **_try_document(found)})


LINE_COLUMNS = [
    "source",
    "metric",
    "quantity",
    "unit",
    "resource",
    "external_id",
    "console_url",
    "amount",
    "currency",
    "method",
    "status",
    "price_amount",
    "price_unit",
    "price_ref",
    "price_source_url",
    "unpriced_reason",
]


def _try_document(found) -> dict:
    """One try and its lines, with its total per currency."""
    totals: dict[str, list] = {}
    for line in found.lines:
        if line.amount is not None:
            total = totals.setdefault(line.currency or "", [0, 0])
            total[0] += line.amount
            total[1] += 1
    lines_doc = Document(
        meta={},
        head={},
        columns=LINE_COLUMNS,
        rows=[[getattr(line, name) for name in LINE_COLUMNS] for line in found.lines],
        money={"amount"},
    )
    total_doc = Document(
        meta={},
        head={},
        columns=["currency", "amount", "lines"],
        rows=[[currency, amount, count] for currency, (amount, count) in sorted(totals.items())],
        money={"amount"},
    )
    return {
        "task_id": found.task_id,
        "run_id": found.run_id,
        "map_index": found.map_index,
        "try_number": found.try_number,
        "state": found.state,
        "status": found.status,
        "start_time": found.start_time.isoformat(),
        "end_time": found.end_time.isoformat(),
        "owner": found.owner,
        "team": found.team,
        "lines": as_records(lines_doc, lines_doc.rows),
        "total": as_records(total_doc, total_doc.rows),
    }


def dag_run(dag_id: str, run_id: str) -> JSONResponse:
    """A DAG run's cost: every recorded try with its lines, and `by_task`, the document `airflow-cost
    report --by task --dag DAG_ID --run RUN_ID --since SINCE --until UNTIL -o json` prints for the
    period from the run's first try's end to just after its last (its `total` is the run's total)."""
    from airflow_cost_provider.cli.report import task_report_document
    from airflow_cost_provider.report import run_tries

    engine, shown_url = _ledger()
    tries = run_tries(engine, dag_id, run_id)
    if not tries:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"the ledger has no cost for run {run_id!r} of {dag_id}"
        )
    since, until = run_period(tries)
    doc, _ = task_report_document(engine, shown_url, "task", since, until, dags=[dag_id], runs=[run_id])
    by_task = as_document(doc)
    return JSONResponse(
        {
            "ledger": shown_url,
            "dag_id": dag_id,
            "run_id": run_id,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "tries": [_try_document(found) for found in tries],
            "by_task": by_task,
            "total": by_task["total"],
        }
    )


def run_period(tries) -> tuple[dt.datetime, dt.datetime]:
    """The shortest period holding every try of a run: from its first end, to just after its last."""
    ends = [found.end_time for found in tries]
    ends = [end if end.tzinfo else end.replace(tzinfo=dt.timezone.utc) for end in ends]
    return min(ends), max(ends) + dt.timedelta(microseconds=1)
