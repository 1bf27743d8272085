"""`airflow-cost prune`: drop the usage detail of old task tries, keeping their daily totals."""

from __future__ import annotations

import argparse

from airflow_cost_provider.cli import CliError
from airflow_cost_provider.cli.common import (
    add_ledger_option,
    add_output_options,
    emit,
    open_ledger,
    parse_day,
    positive_int,
)
from airflow_cost_provider.cli.output import Document

# Tries per transaction: a batch of a few thousand rows keeps each transaction short on a busy ledger.
DEFAULT_BATCH = 500


def add_parser(commands: argparse._SubParsersAction) -> None:
    prune = commands.add_parser(
        "prune",
        help="drop the usage detail (usage rows and cost lines) of task tries that ended before a date",
        description="Delete the cost_usage and cost_lines rows of the task tries that ended before "
        "--before (midnight UTC), a batch of tries per transaction. The tries, their tags and labels, "
        "and the daily totals stay: budgets read the same spend, reports of those days say their "
        "detail was pruned. A date within a budget's current period or history window is refused; "
        "the tries of each DAG's latest runs that a run-anomaly rule compares are kept. Also removes "
        "settled-spend rows no budget refreshed for a week and billing API responses older than a week.",
    )
    prune.add_argument("--before", metavar="DATE", required=True, help="YYYY-MM-DD, UTC; not in the future")
    prune.add_argument(
        "--dry-run", action="store_true", help="count what would be pruned, per batch, and delete nothing"
    )
    prune.add_argument(
        "--batch",
        type=positive_int,
        default=DEFAULT_BATCH,
        metavar="N",
        help=f"task tries per transaction (default {DEFAULT_BATCH})",
    )
    prune.add_argument(
        "--budgets", metavar="PATH", help="the budgets file (default: [cost_provider] budgets_path, if set)"
    )
    add_ledger_option(prune)
    add_output_options(prune)
    prune.set_defaults(handler=run)


def _budgets(explicit: str | None) -> list:
    from airflow_cost_provider import conf
    from airflow_cost_provider.budgets.model import BudgetError, load_budgets

    try:
        path = explicit or conf.budgets_path()
    except conf.ConfigError as error:
        raise CliError(str(error)) from None
    if not path:
        return []
    try:
        return load_budgets(path)
    except BudgetError as error:
        raise CliError(f"{error} (prune reads the budgets to keep what they need)") from None


def run(args: argparse.Namespace) -> int:
    from airflow_cost_provider.ledger.prune import BatchFailed, PruneRefused, prune

    before = parse_day(args.before, "--before")
    budgets = _budgets(args.budgets)
    engine, shown_url = open_ledger(args.ledger)
    failure = None
    try:
        outcome = prune(engine, before, budgets=budgets, batch_size=args.batch, dry_run=args.dry_run)
    except PruneRefused as error:
        raise CliError(str(error)) from None
    except BatchFailed as error:
        outcome, failure = error.outcome, error
    verb = "would prune" if args.dry_run else "pruned"
    summary = (
        f"{verb} the usage detail of {outcome.tries} task tries that ended before {before} "
        f"({outcome.lines} cost lines, {outcome.usage_rows} usage rows) in {len(outcome.batches)} "
        f"batch{'es' if len(outcome.batches) != 1 else ''}"
    )
    notes = [summary]
    if outcome.kept_for_run_rules:
        notes.append(
            f"kept {outcome.kept_for_run_rules} tries of DAGs' latest runs: run-anomaly rules compare them"
        )
    if not args.dry_run and failure is None:
        notes.append(
            f"removed {outcome.settled_rows} settled-spend rows and {outcome.cache_rows} billing API "
            "responses untouched for a week"
        )
    if failure is not None:
        notes.append(f"{failure}: that batch left nothing; the batches before it are done, run again")
    doc = Document(
        meta={
            "ledger": shown_url,
            "before": f"{before} UTC",
            **({"dry run": "nothing deleted"} if args.dry_run else {}),
        },
        head={"ledger": shown_url, "before": before.isoformat(), "dry_run": args.dry_run},
        columns=["batch", "tries", "lines", "usage rows"],
        rows=[[b.number, b.tries, b.lines, b.usage_rows] for b in outcome.batches],
        total=[["total", outcome.tries, outcome.lines, outcome.usage_rows]] if outcome.batches else [],
        numeric={"batch", "tries", "lines", "usage rows"},
        notes=notes,
        extra={
            "tries": outcome.tries,
            "lines": outcome.lines,
            "usage_rows": outcome.usage_rows,
            "kept_for_run_rules": outcome.kept_for_run_rules,
            "settled_rows": outcome.settled_rows,
            "cache_rows": outcome.cache_rows,
            **({"failed": str(failure)} if failure is not None else {}),
        },
        empty=f"(no task try that ended before {before} has usage detail left)",
    )
    emit(doc, args, summary)
    return 1 if failure is not None else 0
