"""`airflow-cost reconcile` (the bill split over the task tries that caused it) and the coverage
document it shares with `airflow-cost report coverage`."""

from __future__ import annotations

import argparse
import datetime as dt
from decimal import Decimal

from airflow_cost_provider.cli import CliError
from airflow_cost_provider.cli.common import (
    add_ledger_option,
    add_output_options,
    day_period,
    emit,
    open_ledger,
)
from airflow_cost_provider.cli.output import Document
from airflow_cost_provider.pricing.money import money_text


def add_parser(commands: argparse._SubParsersAction) -> None:
    reconcile = commands.add_parser(
        "reconcile",
        help="split the imported bill over the task tries that used each billed resource; name the idle rest",
        description="Match the billing rows imported by import-billing (and the warehouse metering imports) "
        "to the ledger lines of the same billing days: by the try's OpenLineage run id in job labels and "
        "tags, by the [cost_provider] billing_resources rules, and by resource (warehouse, workgroup, job, "
        "cluster). Each billed resource and day (and hour, where the bill has hours) is split over its lines; "
        "what they did not use is kept as "
        "idle (reconcile_mode keep, the default) or shared out (spread). Re-running a period replaces its "
        "earlier result. OpenLineage events are not sent again.",
    )
    reconcile.add_argument(
        "--since", metavar="DATE", help="first billing day, YYYY-MM-DD (default: 30 days ago)"
    )
    reconcile.add_argument("--until", metavar="DATE", help="end of the period, excluded (default: tomorrow)")
    reconcile.add_argument(
        "--bigquery-jobs",
        metavar="PROJECT:LOCATION",
        action="append",
        help="read the slot-ms of the project's jobs per reservation and day from "
        "INFORMATION_SCHEMA.JOBS_TIMELINE_BY_PROJECT to split BigQuery reservations' bills "
        "(repeat for more projects; default: the jobs' own statistics)",
    )
    reconcile.add_argument(
        "--gcp-conn-id",
        default="google_cloud_default",
        help="the Google Cloud connection for --bigquery-jobs (default: google_cloud_default)",
    )
    add_ledger_option(reconcile)
    add_output_options(reconcile)
    reconcile.set_defaults(handler=run)


def _options() -> tuple[tuple, dict[str, str]]:
    from airflow_cost_provider import conf

    try:
        return conf.billing_resources(), conf.reconcile_mode()
    except conf.ConfigError as error:
        raise CliError(str(error)) from None


def _job_slots(args: argparse.Namespace, since: dt.date, until: dt.date):
    """The BigQuery jobs' slot-ms per reservation and day (--bigquery-jobs), or None."""
    if not getattr(args, "bigquery_jobs", None):
        return None
    from airflow_cost_provider.billing.bigquery_reservations import parse_projects, read_job_slots
    from airflow_cost_provider.billing.errors import BillingSourceError
    from airflow_cost_provider.billing.scan import DateWindow

    try:
        projects = parse_projects(args.bigquery_jobs)
        return read_job_slots(DateWindow(since, until), projects, gcp_conn_id=args.gcp_conn_id)
    except (ValueError, BillingSourceError) as error:
        raise CliError(f"--bigquery-jobs: {error}; nothing was changed") from None


def run(args: argparse.Namespace) -> int:
    from airflow_cost_provider.reconcile import store
    from airflow_cost_provider.reconcile.engine import ReconcileError, Window
    from airflow_cost_provider.reconcile.engine import run as reconcile

    since, until = day_period(args)
    rules, modes = _options()
    job_slots = _job_slots(args, since, until)
    engine, shown_url = open_ledger(args.ledger)
    try:
        result = reconcile(engine, Window(since, until), rules, modes, job_slots)
    except ReconcileError as error:
        raise CliError(str(error)) from None
    try:
        if result.billed_rows:
            store.write(engine, result)
    finally:
        result.close()
    summary = (
        f"reconciled {_count(result.billed_rows, 'billing row')} in {_count(result.pools, 'pool')} with "
        f"{_count(result.lines, 'cost line')}, "
        f"billing days {since} to {until - dt.timedelta(days=1)}"
        if result.billed_rows
        else f"no billing rows imported for {since} to {until - dt.timedelta(days=1)}: run airflow-cost "
        "import-billing first; nothing was changed"
    )
    doc = coverage_document(engine, shown_url, "provider", since, until, [summary], modes=modes)
    emit(doc, args, summary)
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def _exact(amount: Decimal) -> str:
    """Money as an exact decimal string without trailing zeros (JSON, YAML)."""
    return format(amount.normalize(), "f")


def coverage_document(
    engine,
    shown_url: str,
    by: str,
    since: dt.date,
    until: dt.date,
    notes: list[str] | None = None,
    modes: dict[str, str] | None = None,
) -> Document:
    """Coverage per group, the idlest pools and the accuracy per source: what every face shows."""
    from airflow_cost_provider.reconcile.coverage import accuracy, coverage, idle_pools

    found = coverage(engine, since, until, by)
    rows = [
        [
            row.key,
            row.currency,
            row.billed,
            row.attributed,
            row.unattributed,
            None if row.coverage is None else str(row.coverage),
            row.untouched,
        ]
        for row in found
    ]
    totals: dict[str, list] = {}
    for row in found:
        sums = totals.setdefault(row.currency, [0, 0, 0, 0])
        for index, value in enumerate((row.billed, row.attributed, row.unattributed, row.untouched)):
            sums[index] += value
    total = [
        ["total", currency, b, a, u, str((a / b).quantize(Decimal("0.0001"))) if b else None, t]
        for currency, (b, a, u, t) in sorted(totals.items())
    ]
    notes = list(notes or [])
    idle = idle_pools(engine, since, until)
    for pool, currency, amount, billed in idle:
        notes.append(
            f"{pool} was idle or unattributed for {money_text(amount)} {currency} of {money_text(billed)} billed "
            f"({amount / billed:.0%})"
        )
    checked = accuracy(engine, since, until)
    for row in checked:
        if row.ratio is not None:
            notes.append(
                f"{row.source}: reconciled {money_text(row.reconciled)} {row.currency} against "
                f"{money_text(row.estimated)} estimated over {row.lines:,} lines (x{row.ratio})"
            )
    last = until - dt.timedelta(days=1)
    columns = [by, "currency", "billed", "attributed", "unattributed", "coverage", "untouched"]
    return Document(
        meta={
            "ledger": shown_url,
            "billing days": f"{since} to {last}" if last != since else str(since),
            **({"mode": ", ".join(f"{k} {v}" for k, v in sorted(modes.items()))} if modes else {}),
        },
        head={"ledger": shown_url, "since": since.isoformat(), "until": until.isoformat(), "by": by},
        columns=columns,
        rows=rows,
        total=total,
        money={"billed", "attributed", "unattributed", "untouched"},
        numeric={"coverage"},
        notes=notes,
        extra={
            "accuracy": [
                {
                    "source": row.source,
                    "currency": row.currency,
                    "lines": row.lines,
                    "estimated": _exact(row.estimated),
                    "reconciled": _exact(row.reconciled),
                    "ratio": None if row.ratio is None else str(row.ratio),
                }
                for row in checked
            ],
            "idle": [
                {"pool": pool, "currency": currency, "idle": _exact(amount), "billed": _exact(billed)}
                for pool, currency, amount, billed in idle
            ],
        },
        empty="(nothing reconciled for these billing days: run airflow-cost reconcile)",
    )


def coverage_report(args: argparse.Namespace) -> int:
    from airflow_cost_provider.reconcile.coverage import GROUPINGS

    if args.by not in GROUPINGS:
        raise CliError(f"--by: unknown grouping {args.by!r}: choose from {', '.join(GROUPINGS)}")
    since, until = day_period(args)
    engine, shown_url = open_ledger(args.ledger)
    emit(coverage_document(engine, shown_url, args.by, since, until), args)
    return 0
