"""`airflow-cost export --format focus`: the ledger's costs as a FOCUS 1.2 file (CSV or Parquet)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from airflow_cost_provider.cli import CliError
from airflow_cost_provider.cli.common import add_ledger_option, open_ledger, period, show_period
from airflow_cost_provider.cli.output import Document, render

EXPORT_FORMATS = ("focus",)
EXAMPLES = """examples:
  airflow-cost export --format focus --since 2026-11-01 --until 2026-12-01 --output costs-2026-11.csv
  airflow-cost export --format focus --output costs.parquet          the last 30 days, as Parquet
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="write the costs of a period as a FOCUS 1.2 file (CSV or Parquet) for FinOps tools",
        description="Write one FOCUS 1.2 row per priced cost line of the task tries that ended in a "
        "period, and one per imported storage cost of the billing days that start in it, to a CSV or "
        "Parquet file (chosen by its extension). The file is written whole or not at all. Unpriced "
        "usage has no cost and FOCUS costs cannot be null: it is left out and counted.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="export_format")
    export.add_argument(
        "--since",
        metavar="WHEN",
        help="task tries that ended from this moment (YYYY-MM-DD[THH:MM], UTC unless an offset is "
        "given; default: the last 30 days up to now)",
    )
    export.add_argument("--until", metavar="WHEN", help="end of the period, excluded (YYYY-MM-DD[THH:MM])")
    export.add_argument(
        "--output", required=True, metavar="FILE", help="the file to write: FILE.csv or FILE.parquet"
    )
    add_ledger_option(export)
    export.set_defaults(handler=export_costs)


def _target(text: str) -> tuple[Path, str]:
    """The file to write and its format; refused before anything is read when it cannot be written."""
    from airflow_cost_provider.export.focus import format_of

    path = Path(text).expanduser()
    file_format = format_of(path)
    if file_format is None:
        raise CliError(f"--output {text}: the file name must end in .csv or .parquet")
    folder = path.parent.resolve()
    if not folder.is_dir():
        raise CliError(f"--output {text}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"--output {text}: the folder {folder} is not writable")
    if path.is_dir():
        raise CliError(f"--output {text}: is a folder, not a file")
    return path, file_format


def export_costs(args: argparse.Namespace) -> int:
    from airflow_cost_provider.export import focus as focus_export

    path, file_format = _target(args.output)
    since, until = period(args)
    engine, shown_url = open_ledger(args.ledger)
    export = focus_export.focus_export(engine, since, until)
    try:
        focus_export.write(export, path, file_format)
    except OSError as error:
        raise CliError(f"--output {args.output}: cannot write it: {error.strerror or error}") from None
    currencies = sorted(set(export.task_totals) | set(export.storage_totals))
    rows = [
        [
            currency,
            export.task_totals.get(currency),
            export.storage_totals.get(currency),
            export.totals[currency],
        ]
        for currency in currencies
    ]
    notes = [
        f"Wrote {len(export.rows)} FOCUS {focus_export.FOCUS_VERSION} row{'s' if len(export.rows) != 1 else ''} "
        f"({export.task_rows} task cost line{'s' if export.task_rows != 1 else ''}, "
        f"{export.storage_rows} storage cost{'s' if export.storage_rows != 1 else ''}) to {path}"
    ]
    if export.unpriced_lines:
        notes.append(
            f"Left out: {export.unpriced_lines} unpriced line{'s' if export.unpriced_lines != 1 else ''} "
            "(no price, so no cost; FOCUS costs cannot be null). See airflow-cost report for their causes."
        )
    doc = Document(
        meta={"ledger": shown_url, "period": show_period(since, until), "file": str(path)},
        head={"ledger": shown_url, "since": since.isoformat(), "until": until.isoformat(), "file": str(path)},
        columns=["currency", "tasks", "storage", "total"],
        rows=rows,
        money={"tasks", "storage", "total"},
        notes=notes,
        empty="(no priced costs in this period: the file has the header only)",
    )
    print(render(doc, "table"))
    return 0
