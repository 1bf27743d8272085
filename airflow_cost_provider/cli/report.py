"""`airflow-cost report` (task-try costs), `airflow-cost report storage` (imported storage costs) and
`airflow-cost report savings` (what dbt's reuse of unchanged nodes saved)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import textwrap
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from airflow_cost_provider.cli import CliError, Parser
from airflow_cost_provider.cli.common import (
    add_ledger_option,
    add_output_options,
    day_period,
    emit,
    open_ledger,
    period,
    positive_int,
    show_period,
)
from airflow_cost_provider.cli.output import Document, escape

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from airflow_cost_provider.report import CostReport

TASK_GROUPINGS = ("dag", "task", "run", "try", "source", "day", "owner", "team", "tag", "model", "label:KEY")
STORAGE_GROUPINGS = ("resource", "service", "usage-class", "day", "provider", "dataset")
NOTE_WIDTH = 100

TASK_EXAMPLES = """examples:
  airflow-cost report                                  cost per task, last 30 days
  airflow-cost report --by dag --top 10                the 10 costliest DAGs
  airflow-cost report --by day --dag daily_sales       one DAG's cost, day by day
  airflow-cost report --by dag,source --since 2026-11-01 --until 2026-12-01
  airflow-cost report --by try -o json                 every task try, as JSON
  airflow-cost report --by team,source                 each team's cost per source
  airflow-cost report --by label:product --dag daily_sales
  airflow-cost report --by model --source bigquery     each dbt model's BigQuery cost
"""
SAVINGS_EXAMPLES = """examples:
  airflow-cost report savings                          per dbt model and day, last 30 days
  airflow-cost report savings --by model --since 2026-11-01
  airflow-cost report savings --builds 10 -o csv
"""
STORAGE_EXAMPLES = """examples:
  airflow-cost report storage                          cost per bucket, last 30 days
  airflow-cost report storage --by usage-class         storage, requests, egress... in total
  airflow-cost report storage --by resource,day -o csv
  airflow-cost report storage --by dataset             the share allocated to each dataset
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="what task runs cost, grouped by DAG, task, run, try, source, day, owner, team, tag or label",
        description="Sum the cost of the task tries that ended in a period, per group and currency, "
        "sorted by cost (a daily series in time order), with a total. Usage that has no price is "
        "counted apart and never as zero. Tries without an owner, team, tag or the label (and those "
        "recorded before attribution) show as (none); by tag, a try counts once under each of its "
        "DAG's tags, so the rows can add up to more than the total.",
        epilog=TASK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument(
        "--dag", action="append", default=[], metavar="DAG_ID", help="only this DAG (repeatable)"
    )
    report.add_argument(
        "--task", action="append", default=[], metavar="TASK_ID", help="only this task (repeatable)"
    )
    report.add_argument(
        "--run", action="append", default=[], metavar="RUN_ID", help="only this DAG run (repeatable)"
    )
    report.add_argument(
        "--source", action="append", default=[], help="only this source, e.g. bigquery (repeatable)"
    )
    _period_options(report, "task tries that ended from this moment", "the last 30 days up to now")
    _shared_options(report, TASK_GROUPINGS, "task", "dag,day")
    report.set_defaults(handler=task_report)

    kinds = report.add_subparsers(dest="kind", metavar="KIND", parser_class=Parser)
    storage = kinds.add_parser(
        "storage",
        help="imported storage costs (S3, Cloud Storage, Azure storage), by billing day",
        description="Sum the storage costs imported from billing data (import-storage) for billing days "
        "in a period, per group and currency, sorted by cost (a daily series in time order), with a total.",
        epilog=STORAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _period_options(storage, "first billing day", "the last 30 days, today included", days=True)
    _shared_options(storage, STORAGE_GROUPINGS, "resource", "resource,day")
    storage.set_defaults(handler=storage_report)
    savings = kinds.add_parser(
        "savings",
        help="what dbt's reuse of unchanged models saved, per model and day",
        description="dbt nodes that were reused or skipped instead of built, per model and day (UTC "
        "day the task try ended): the reuses, the builds, the reuse rate, the amount saved (each reuse "
        "at the average of the node's last N priced builds before it) and the average per reuse. A "
        "reuse with no priced build to go by is counted as unestimated, never as zero.",
        epilog=SAVINGS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    savings.add_argument(
        "--dag", action="append", default=[], metavar="DAG_ID", help="only this DAG (repeatable)"
    )
    _period_options(savings, "task tries that ended from this moment", "the last 30 days up to now")
    savings.add_argument(
        "--by",
        default="model,day",
        choices=("model,day", "model", "day"),
        metavar="GROUPING",
        help="model,day, model (a summary over the period) or day (default: model,day)",
    )
    savings.add_argument(
        "--builds",
        type=positive_int,
        default=5,
        metavar="N",
        help="a reuse saves the average of the node's last N priced builds (default: 5)",
    )
    add_output_options(savings)
    add_ledger_option(savings)
    savings.set_defaults(handler=savings_report)
    coverage = kinds.add_parser(
        "coverage",
        help="how much of the bill airflow-cost reconcile attributed to task tries, and what stayed idle",
        description="Per group and currency: the bill of the resources Airflow tasks use (billed), what "
        "reconcile gave to task tries (attributed), what stayed idle or unattributed, coverage = "
        "attributed / billed, and apart from them the bill of resources no task touched (untouched). "
        "attributed + unattributed = billed, exactly. Then the idlest pools and, per source, "
        "reconciled / estimated.",
    )
    _period_options(coverage, "first billing day", "the last 30 days, today included", days=True)
    coverage.add_argument(
        "--by",
        default="provider",
        choices=("provider", "service", "resource", "day", "source"),
        help="group by (default: provider)",
    )
    add_output_options(coverage)
    add_ledger_option(coverage)
    coverage.set_defaults(handler=coverage_report)


def coverage_report(args: argparse.Namespace) -> int:
    from airflow_cost_provider.cli.reconcile import coverage_report as run

    return run(args)


def _shared_options(
    parser: argparse.ArgumentParser, groupings: tuple[str, ...], default: str, combined: str
) -> None:
    parser.add_argument(
        "--by",
        default=default,
        metavar="GROUPING",
        help=f"{', '.join(groupings)} or a comma list such as {combined} (default: {default})",
    )
    parser.add_argument(
        "--top", type=positive_int, metavar="N", help="only the N costliest rows (the total keeps all)"
    )
    add_output_options(parser)
    add_ledger_option(parser)


def _period_options(
    parser: argparse.ArgumentParser, since_help: str, default: str, days: bool = False
) -> None:
    kind = "YYYY-MM-DD" if days else "YYYY-MM-DD[THH:MM]"
    zone = "" if days else ", UTC unless an offset is given"  # billing days are dates: no time, no offset
    parser.add_argument("--since", metavar="WHEN", help=f"{since_help} ({kind}{zone}; default: {default})")
    parser.add_argument("--until", metavar="WHEN", help=f"end of the period, excluded ({kind})")


def _keys(by: str, groupings: dict) -> tuple[str, ...]:
    from airflow_cost_provider.report import ReportError, group_keys

    try:
        return group_keys(by, groupings)
    except ReportError as error:
        raise CliError(f"--by: {error}") from None


def fix_for(reason: str) -> str | None:
    """Where an unpriced cause is fixed, when the reason tells."""
    text = reason.lower()
    if any(
        key in text for key in ("instance_type", "edition", "warehouse_size", "node_type", "vcores", "tier=")
    ):
        return "set the connection's attributes in [cost_provider] connection_pricing"
    if "bigquery_pricing" in text:
        return "set [cost_provider] bigquery_pricing"
    if "price book" in text or text.startswith("no price for") or "add a " in text:
        return "add the price to your price book ([cost_provider] price_book_path)"
    return None


def short_cause(source: str, metric: str, reason: str) -> tuple[str, str | None]:
    """(why, fix) from a recorded reason: without the "no price for source/metric" already shown, and
    with its advice ("set ...", "add ...") apart."""
    text = reason.strip()
    prefix = f"no price for {source}/{metric}"
    if text.startswith(prefix):
        text = text[len(prefix) :].lstrip(" :") or "no price in the price book"
    why, _, advice = text.partition("; ")
    fix = advice if advice.startswith(("set ", "add ")) else None
    return why or "no reason recorded", fix or fix_for(reason)


def _unpriced_notes(causes) -> list[str]:
    if not causes:
        return []
    total = sum(cause.count for cause in causes)
    notes = [
        f"Unpriced usage, never counted as zero: {total} line{'s' if total != 1 else ''}, "
        f"{len(causes)} cause{'s' if len(causes) != 1 else ''}"
    ]
    for cause in causes:
        why, fix = short_cause(cause.source, cause.metric, cause.reason)
        # prose is wrapped, not cut: the connection or price it names is the point
        notes += textwrap.wrap(
            f"{cause.count} x {cause.source}/{cause.metric}: {escape(why)}",
            NOTE_WIDTH,
            initial_indent="  ",
            subsequent_indent="      ",
        )
        if fix:
            notes += textwrap.wrap(
                f"fix: {escape(fix)}", NOTE_WIDTH, initial_indent="    ", subsequent_indent="      "
            )
    return notes


def _empty_hint(data_range, what: str, period_read: str, filtered: bool = False) -> str:
    """Why a report is empty: the period read, and where the ledger does have data."""
    if data_range is None:
        where = "for these filters in any period" if filtered else "in any period: it is written as tasks run"
        return f"No {what} from {period_read}, and none {where}."
    return (
        f"No {what} from {period_read}; the ledger has them from {data_range.first} to {data_range.last}: "
        f"try --since {data_range.first} --until {data_range.last + dt.timedelta(days=1)}"
    )


def task_report(args: argparse.Namespace) -> int:
    from airflow_cost_provider import report as queries

    _keys(args.by, queries.GROUPINGS)
    since, until = period(args)
    engine, shown_url = open_ledger(args.ledger)
    _warn_of_spooled_captures()
    doc, hint = task_report_document(
        engine,
        shown_url,
        args.by,
        since,
        until,
        dags=args.dag,
        tasks=args.task,
        sources=args.source,
        runs=args.run,
        top=args.top,
    )
    emit(doc, args, hint)
    return 0


def task_report_document(
    engine: Engine,
    shown_url: str,
    by: str,
    since: dt.datetime,
    until: dt.datetime,
    *,
    dags: Sequence[str] = (),
    tasks: Sequence[str] = (),
    sources: Sequence[str] = (),
    top: int | None = None,
    visible_dags: Collection[str] | None = None,
    runs: Sequence[str] = (),
) -> tuple[Document, str | None]:
    """The task cost report every face shows (the CLI, the JSON API), and the hint an empty one gives.
    `visible_dags`: only these DAGs' costs, rows and totals alike (what a user may read)."""
    from airflow_cost_provider import report as queries

    result = queries.cost_report(
        engine,
        by,
        since,
        until,
        dags=dags,
        tasks=tasks,
        sources=sources,
        top=top,
        visible_dags=visible_dags,
        runs=runs,
    )
    return report_document(
        result,
        shown_url,
        dags=dags,
        tasks=tasks,
        sources=sources,
        runs=runs,
        top=top,
        for_a_user=visible_dags is not None,
    )


def report_document(
    result: CostReport,
    shown_url: str,
    *,
    dags: Sequence[str] = (),
    tasks: Sequence[str] = (),
    sources: Sequence[str] = (),
    top: int | None = None,
    for_a_user: bool = False,
    runs: Sequence[str] = (),
) -> tuple[Document, str | None]:
    """task_report_document() of a report already read (report.cost_reports reads several at once).
    `for_a_user`: the report holds only the DAGs a user may read."""
    keys, since, until = result.keys, result.since, result.until
    # estimated and reconciled side by side, once `reconcile` has reached a line of the period
    reconciled = any(row.reconciled is not None for row in result.rows)
    beside = ["reconciled"] if reconciled else []
    columns = [*keys, "amount", *beside, "currency", "status", "lines", "unpriced"]
    rows = [
        [
            *row.keys.values(),
            row.amount,
            *([row.reconciled] if reconciled else []),
            row.currency,
            row.status,
            row.lines,
            row.unpriced,
        ]
        for row in result.rows
    ]
    blank = [None] * (len(keys) - 1)
    total = [
        [
            "total",
            *blank,
            t.amount,
            *([t.reconciled] if reconciled else []),
            t.currency,
            "unpriced" if t.currency is None else None,
            t.lines,
            t.unpriced,
        ]
        for t in result.totals
    ]
    filters = {
        name: list(values)
        for name, values in (("dag", dags), ("task", tasks), ("run", runs), ("source", sources))
        if values
    }
    meta = {"ledger": shown_url, "period": show_period(since, until), "grouped by": ", ".join(keys)}
    if result.reconciled_until is not None:
        meta["reconciled up to"] = f"billing day {result.reconciled_until} (airflow-cost reconcile)"
    if filters:
        meta["only"] = "; ".join(f"{name} {', '.join(values)}" for name, values in filters.items())
    notes = []
    if result.omitted_rows:
        notes.append(
            f"{result.omitted_rows} more row{'s' if result.omitted_rows != 1 else ''} not shown (--top {top}); the total includes them."
        )
    if "tag" in keys and result.rows:
        notes.append(
            "By tag, a try counts once under each of its DAG's tags: the rows can add up to more than the total."
        )
    notes += _unpriced_notes(result.unpriced)
    if result.pruned is not None:
        notes.append(_pruned_note(result.pruned))
    hint = None
    if not result.rows:
        hint = _empty_hint(
            result.data_range,
            "task costs",
            show_period(since, until),
            filtered=bool(filters) or for_a_user,
        )
        notes.append(hint)
    doc = Document(
        meta=meta,
        head={
            "ledger": shown_url,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "by": list(keys),
            "filters": filters,
        },
        columns=columns,
        rows=rows,
        total=total,
        money={"amount", "reconciled"},
        numeric={"lines", "unpriced", "map_index", "try_number"},
        notes=notes,
        extra={
            "omitted_rows": result.omitted_rows,
            **(
                {"reconciled_until": result.reconciled_until.isoformat()}
                if result.reconciled_until is not None
                else {}
            ),
            "unpriced": [
                {
                    "source": c.source,
                    "metric": c.metric,
                    "reason": c.reason,
                    "count": c.count,
                    "fix": short_cause(c.source, c.metric, c.reason)[1],
                }
                for c in result.unpriced
            ],
            **({"data_range": _range(result.data_range)} if not result.rows else {}),
            **(
                {"pruned": {"before": result.pruned.before.isoformat(), "tries": result.pruned.tries}}
                if result.pruned is not None
                else {}
            ),
        },
        empty="(no task costs in this period)",
    )
    return doc, hint


def _pruned_note(pruned) -> str:
    tries = f"{pruned.tries} task tr{'ies' if pruned.tries != 1 else 'y'}"
    return (
        f"{tries} of this period ended before {pruned.before} and had their usage detail pruned "
        "(airflow-cost prune): their costs are not in these rows or the total. Budgets, and reports "
        "by dag, task, source, day, owner or team over whole UTC days, still count them (the ledger "
        "keeps daily totals per DAG, task, owner, team and source)."
    )


def _warn_of_spooled_captures() -> None:
    """Captures spooled on this machine are missing from the report until replayed."""
    from airflow_cost_provider.capture.spool import waiting_message

    if warning := waiting_message():
        print(f"warning: {warning}", file=sys.stderr)


def _range(data_range) -> dict | None:
    return (
        None
        if data_range is None
        else {"first": data_range.first.isoformat(), "last": data_range.last.isoformat()}
    )


def storage_report(args: argparse.Namespace) -> int:
    from airflow_cost_provider import report as queries

    try:
        queries.storage_group_keys(args.by)
    except queries.ReportError as error:
        raise CliError(f"--by: {error}") from None
    since, until = day_period(args)
    engine, shown_url = open_ledger(args.ledger)
    doc, hint = storage_report_document(engine, shown_url, args.by, since, until, top=args.top)
    emit(doc, args, hint)
    return 0


def storage_report_document(
    engine: Engine, shown_url: str, by: str, since: dt.date, until: dt.date, *, top: int | None = None
) -> tuple[Document, str | None]:
    """The storage cost report every face shows, and the hint an empty one gives."""
    from airflow_cost_provider import report as queries

    keys = queries.storage_group_keys(by)
    result = queries.storage_report(engine, by, since, until, top=top)
    columns = [*keys, "amount", "currency", "credits", "rows"]
    rows = [[*row.keys.values(), row.amount, row.currency, row.credits, row.rows] for row in result.rows]
    blank = [None] * (len(keys) - 1)
    total = [
        ["total", *blank, amount, currency, credits, count]
        for currency, amount, credits, count in result.totals
    ]
    notes = []
    by_dataset = any(key in queries.DATASET_KEYS for key in keys)
    if by_dataset and result.rows:
        notes.append(
            "Per dataset: the share of its bucket's cost allocated to it by bytes (storage_allocation); "
            "credits are within the amounts, and the part of a bucket no dataset was given is not shown."
        )
    if result.omitted_rows:
        notes.append(
            f"{result.omitted_rows} more row{'s' if result.omitted_rows != 1 else ''} not shown (--top {top}); the total includes them."
        )
    hint = None
    if not result.rows:
        hint = _empty_hint(
            result.data_range,
            "storage costs allocated to datasets" if by_dataset else "storage costs",
            f"billing days {since} to {until - dt.timedelta(days=1)}",
        )
        notes.append(hint)
    last_day = until - dt.timedelta(days=1)
    doc = Document(
        meta={
            "ledger": shown_url,
            "billing days": f"{since} to {last_day}" if last_day != since else str(since),
            "grouped by": ", ".join(keys),
        },
        head={"ledger": shown_url, "since": since.isoformat(), "until": until.isoformat(), "by": list(keys)},
        columns=columns,
        rows=rows,
        total=total,
        money={"amount", "credits"},
        numeric={"rows"},
        notes=notes,
        extra={
            "omitted_rows": result.omitted_rows,
            **({"data_range": _range(result.data_range)} if not result.rows else {}),
        },
        empty="(no storage costs imported for these billing days)",
    )
    return doc, hint


def savings_report(args: argparse.Namespace) -> int:
    since, until = period(args)
    engine, shown_url = open_ledger(args.ledger)
    doc = savings_report_document(
        engine, shown_url, since, until, by=args.by, builds=args.builds, dags=args.dag
    )
    emit(doc, args)
    return 0


def savings_report_document(
    engine: Engine,
    shown_url: str,
    since: dt.datetime,
    until: dt.datetime,
    *,
    by: str = "model,day",
    builds: int = 5,
    dags: Sequence[str] = (),
) -> Document:
    from airflow_cost_provider.savings import savings_report as query

    result = query(engine, since, until, by=by, builds=builds, dags=dags)
    keys = list(result.keys)
    columns = [*keys, "reuses", "builds", "reuse_rate", "saved", "currency", "per_reuse"]
    rows = [
        [
            *(escape(str(value)) if key == "model" else value for key, value in row.keys.items()),
            row.reuses,
            row.builds,
            str(row.reuse_rate),  # exact text, as money is
            row.saved,
            row.currency,
            row.per_reuse,
        ]
        for row in result.rows
    ]
    blank = [None] * (len(keys) - 1)
    total = [
        ["total", *blank, reuses, None, None, saved, currency, None]
        for currency, saved, reuses in result.totals
    ]
    notes = []
    if result.unestimated:
        notes.append(
            f"{result.unestimated} reuse{'s' if result.unestimated != 1 else ''} had no priced build before "
            "to estimate from (an unpriced adapter such as duckdb, or a node never built in the last 90 days)."
        )
    return Document(
        meta={"ledger": shown_url, "period": show_period(since, until), "grouped by": ", ".join(keys)},
        head={
            "ledger": shown_url,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "by": keys,
            "builds_averaged": builds,
        },
        columns=columns,
        rows=rows,
        total=total,
        money={"saved", "per_reuse"},
        numeric={"reuses", "builds", "reuse_rate"},
        notes=notes,
        extra={"unestimated_reuses": result.unestimated},
        empty="(no dbt runs in this period)",
    )
