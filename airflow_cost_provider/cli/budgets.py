"""`airflow-cost budgets [status|list|check]`: where each budget stands, what the file defines, and
whether it is valid."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from airflow_cost_provider.cli import CliError
from airflow_cost_provider.cli.common import UTC, add_ledger_option, add_output_options, emit, open_ledger
from airflow_cost_provider.cli.output import Document, escape

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from airflow_cost_provider.budgets.evaluate import BudgetStatus
    from airflow_cost_provider.budgets.model import Budget

ACTIONS = ("status", "list", "check")
NOTE_WIDTH = 100

EXAMPLES = """examples:
  airflow-cost budgets                                 where each budget stands this period
  airflow-cost budgets status --budget marketing-dags -o json
  airflow-cost budgets status --period previous        how the last period ended
  airflow-cost budgets list                            what the budgets file defines
  airflow-cost budgets check                           validate the file; warn about unseen currencies
  airflow-cost budgets --budgets ./cost_budgets.yaml --ledger sqlite:////tmp/cost_ledger.db
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    budgets = commands.add_parser(
        "budgets",
        help="budgets: spent, forecast and thresholds crossed per budget; the file's budgets; its check",
        description="status (default): each budget's period, spent, forecast, amount, percent spent and the "
        "thresholds crossed, with the top contributors and anomalies. list: the budgets the file defines. "
        "check: validate the file (exit 1 when it does not load) and warn about budgets in a currency the "
        "ledger never saw.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    budgets.add_argument("action", nargs="?", choices=ACTIONS, default="status", help="default: status")
    budgets.add_argument(
        "--budgets",
        dest="budgets_file",
        metavar="PATH",
        help="the budgets file (default: [cost_provider] budgets_path)",
    )
    budgets.add_argument(
        "--budget", action="append", default=[], metavar="NAME", help="only this budget (repeatable)"
    )
    budgets.add_argument(
        "--period",
        choices=("current", "previous"),
        default="current",
        help="status of the running period (default) or of the one before it",
    )
    add_output_options(budgets)
    add_ledger_option(budgets)
    budgets.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = _path(args.budgets_file)
    if args.action == "check":
        return _check(args, path)
    budgets = _selected(_load(path), args.budget)
    if args.action == "list":
        emit(_list_document(budgets, path, args.output), args)
        return 0
    return _status(args, path, budgets)


def _path(explicit: str | None) -> str:
    if explicit:
        return explicit
    from airflow_cost_provider import conf

    try:
        configured = conf.budgets_path()
    except conf.ConfigError as error:
        raise CliError(str(error)) from None
    if not configured:
        raise CliError("no budgets file: set [cost_provider] budgets_path or give --budgets PATH")
    return configured


def _load(path: str) -> list[Budget]:
    from airflow_cost_provider.budgets.model import BudgetError, load_budgets

    try:
        return load_budgets(path)
    except BudgetError as error:
        raise CliError(str(error)) from None


def _selected(budgets: list[Budget], names: list[str]) -> list[Budget]:
    if not names:
        return budgets
    known = {budget.name for budget in budgets}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise CliError(
            f"--budget {unknown[0]!r} is not in the budgets file: it has {', '.join(sorted(known)) or 'none'}"
        )
    return [budget for budget in budgets if budget.name in names]


# ---------------------------------------------------------------- status


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _status(args: argparse.Namespace, path: str, budgets: list[Budget]) -> int:
    engine, shown_url = open_ledger(args.ledger)
    emit(status_document(engine, shown_url, path, budgets, args.period, _now(), args.output), args)
    return 0


def status_document(
    engine: Engine,
    shown_url: str,
    path: str,
    budgets: list[Budget],
    period: str,
    now: dt.datetime,
    fmt: str,
) -> Document:
    """Where each budget stands in its `current` or `previous` period, as every face shows it (the
    CLI in `fmt`, the JSON API as json)."""
    from airflow_cost_provider.budgets.evaluate import evaluate
    from airflow_cost_provider.budgets.periods import previous_bounds

    statuses = []
    with engine.connect() as conn:
        for budget in budgets:
            bounds = None
            if period == "previous":
                bounds = previous_bounds(budget.period, now, budget.week_start, budget.timezone)
            statuses.append(evaluate(conn, budget, now, bounds=bounds, contributors=True))
    return _status_document(statuses, path, shown_url, now, fmt)


def _period_text(status: BudgetStatus) -> str:
    """`2026-12 UTC`, `week of 2026-11-29 CET`: short enough for a table row; the exact bounds and the
    time zone's name are in csv, json and yaml."""
    from airflow_cost_provider.budgets.periods import period_label

    zone = status.period_start.tzname() or status.budget.timezone
    return f"{period_label(status.budget.period, status.period_start)} {zone}"


def _crossed_text(status: BudgetStatus) -> str:
    """`actual:80%, forecast:100%, 2 anomalies`: the anomalies' own keys are in the notes below."""
    parts = [threshold.key for threshold in status.crossed]
    if status.anomalies:
        count = len(status.anomalies)
        parts.append(f"{count} anomal{'ies' if count != 1 else 'y'}")
    return ", ".join(parts)


def _crossed_keys(status: BudgetStatus) -> list[str]:
    return [threshold.key for threshold in status.crossed] + [anomaly.key for anomaly in status.anomalies]


def _status_document(
    statuses: list[BudgetStatus], path: str, shown_url: str, now: dt.datetime, fmt: str
) -> Document:
    machine = fmt in ("csv", "json", "yaml")
    columns = ["budget", "scope", "period", "spent", "forecast", "amount", "currency", "percent", "crossed"]
    if machine:  # the period's parts, for programs; a table shows them as one text
        columns[3:3] = ["period_start", "period_end", "timezone", "week_start"]
    # a table of budgets in one currency says it once, above it: a column less to fit in 100
    currencies = {status.budget.currency for status in statuses}
    one_currency = not machine and len(currencies) == 1
    rows = []
    for status in statuses:
        budget = status.budget
        crossed = _crossed_keys(status)
        row = [
            budget.name,
            budget.scope.as_dict() if fmt in ("json", "yaml") else budget.scope.describe(),
            budget.period if machine else _period_text(status),
            status.spent_amount,
            status.forecast,
            budget.amount,
            budget.currency,
            str(status.percent),
            crossed if fmt in ("json", "yaml") else "; ".join(crossed) if machine else _crossed_text(status),
        ]
        if machine:
            row[3:3] = [
                status.period_start.isoformat(),
                status.period_end.isoformat(),
                budget.timezone,
                budget.week_start_name,
            ]
        if not machine:  # a table has no room for the scope: each budget's notes start with it
            del row[columns.index("scope")]
        if one_currency:
            del row[columns.index("currency") - (not machine)]
        rows.append(row)
    if not machine:
        columns.remove("scope")
    if one_currency:
        columns.remove("currency")
    return Document(
        meta={
            "ledger": shown_url,
            "budgets": path,
            "evaluated at": f"{now:%Y-%m-%d %H:%M} UTC",
            **({"currency": next(iter(currencies))} if one_currency else {}),
        },
        head={"ledger": shown_url, "budgets_file": path, "evaluated_at": now.isoformat()},
        columns=columns,
        rows=rows,
        money={"spent", "forecast", "amount"},
        numeric={"percent"},
        whole={"period"},
        notes=[] if machine else _status_notes(statuses),
        extra={"details": [_details(status) for status in statuses]} if fmt in ("json", "yaml") else {},
        empty=f"(no budgets in {path})",
    )


def _status_notes(statuses: list[BudgetStatus]) -> list[str]:
    from airflow_cost_provider.budgets.evaluate import money_text

    notes = []
    for status in statuses:
        currency = status.budget.currency
        lines = [f"scope: {status.budget.scope.describe()}"]
        if status.storage_spent is not None:
            through = (
                f"billing days through {status.storage_through}"
                if status.storage_through
                else "none imported"
            )
            lines.append(f"storage costs: {money_text(status.storage_spent)} of the spent ({through})")
        if status.crossed:  # the table's column may be cut
            lines.append(f"crossed: {', '.join(threshold.key for threshold in status.crossed)}")
        if status.top_contributors and (status.crossed or status.anomalies):
            lines.append(
                "top contributors: "
                + ", ".join(
                    f"{escape(name)} {money_text(amount)}" for name, amount in status.top_contributors
                )
            )
        lines += [anomaly.describe() for anomaly in status.anomalies]
        if status.forecast_note and not status.complete:
            lines.append(status.forecast_note)
        for other, amount in status.other_currencies.items():
            lines.append(
                f"also {money_text(amount)} {other} in the scope: not counted (never converted to {currency})"
            )
        if status.unpriced:
            lines.append(f"{status.unpriced} unpriced line{'s' if status.unpriced != 1 else ''} not counted")
        notes.append(f"{escape(status.budget.name)}:")
        for line in lines:
            notes += textwrap.wrap(line, NOTE_WIDTH, initial_indent="  ", subsequent_indent="    ")
    return notes


def _details(status: BudgetStatus) -> dict[str, Any]:
    """What a row cannot hold, per budget, in json and yaml."""
    from airflow_cost_provider.budgets.evaluate import money_text

    def plain(amount) -> str:
        return money_text(amount).replace(",", "")

    return {
        "budget": status.budget.name,
        "top_contributors": [
            {"name": name, "amount": plain(amount)} for name, amount in status.top_contributors
        ],
        "anomalies": [
            {
                "key": anomaly.key,
                "kind": anomaly.kind,
                "subject": anomaly.subject,
                "amount": plain(anomaly.amount),
                "median": plain(anomaly.median),
                "limit": plain(anomaly.limit),
                "currency": anomaly.currency,
                "description": anomaly.describe(),
            }
            for anomaly in status.anomalies
        ],
        "forecast_judged": status.forecast_judged,
        "forecast_note": status.forecast_note,
        "history_days": status.history_days,
        "weekday_aware": status.weekday_aware,
        "other_currencies": {currency: plain(amount) for currency, amount in status.other_currencies.items()},
        "unpriced_lines": status.unpriced,
        # imported storage costs within spent; null when the scope counts none
        "storage_spent": None if status.storage_spent is None else plain(status.storage_spent),
        "storage_imported_through": status.storage_through.isoformat() if status.storage_through else None,
    }


# ---------------------------------------------------------------- list


def _list_document(budgets: list[Budget], path: str, fmt: str) -> Document:
    machine = fmt in ("json", "yaml")
    columns = [
        "budget",
        "scope",
        "period",
        "week_start",
        "timezone",
        "amount",
        "currency",
        "thresholds",
        "notify",
        "enforce",
    ]
    rows = []
    for budget in budgets:
        thresholds = [threshold.key for threshold in budget.thresholds]
        channels = [target.channel for target in budget.notify]
        rows.append(
            [
                budget.name,
                budget.scope.as_dict() if machine else budget.scope.describe(),
                budget.period,
                budget.week_start_name,
                budget.timezone,
                budget.amount,
                budget.currency,
                thresholds if machine else ", ".join(thresholds),
                channels if machine else ", ".join(channels),
                budget.enforce,
            ]
        )
    return Document(
        meta={"budgets": path},
        head={"budgets_file": path},
        columns=columns,
        rows=rows,
        money={"amount"},
        empty=f"(no budgets in {path})",
    )


# ---------------------------------------------------------------- check


def _check(args: argparse.Namespace, path: str) -> int:
    from airflow_cost_provider.budgets.evaluate import unseen_currency_warnings
    from airflow_cost_provider.budgets.model import BudgetError, load_budgets
    from airflow_cost_provider.budgets.notify import unusable_notifiers

    try:
        budgets = load_budgets(path)
    except BudgetError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    if problems := unusable_notifiers(budgets):
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        engine, shown_url = open_ledger(args.ledger)
    except CliError as error:
        print(f"note: currencies not checked: {error}", file=sys.stderr)
    else:
        for warning in unseen_currency_warnings(engine, budgets):
            print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: {len(budgets)} budget{'s' if len(budgets) != 1 else ''}, valid")
    return 0
