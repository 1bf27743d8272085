"""`airflow-cost`: reports from the cost ledger, and a check of the configuration and price book."""

from __future__ import annotations

import argparse
import datetime as dt
import sys


def _timestamp(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO date or date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def build_parser() -> argparse.ArgumentParser:
    from airflow_cost_provider.report import GROUPINGS

    parser = argparse.ArgumentParser(prog="airflow-cost", description="Costs of Airflow task runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="sum the ledger's costs by DAG, task, run, try or source")
    report.add_argument("--since", type=_timestamp, help="start of the period (ISO); default: 30 days ago")
    report.add_argument("--until", type=_timestamp, help="end of the period, exclusive (ISO); default: now")
    report.add_argument("--by", choices=sorted(GROUPINGS), default="task")
    report.add_argument("--format", choices=("table", "json", "csv"), default="table")
    report.add_argument(
        "--ledger", help="SQLAlchemy URL of the ledger (default: [cost_provider] ledger_conn)"
    )
    commands.add_parser("check", help="validate [cost_provider] and the price book; exit 1 on a problem")
    return parser


def _ledger_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    from airflow_cost_provider.tracker import ledger_url

    return ledger_url()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check":
        from airflow_cost_provider.plugin import check_configuration, check_openlineage_setup

        problems = check_configuration()
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if warning := check_openlineage_setup():
            print(f"warning: {warning}", file=sys.stderr)
        if not problems:
            print("cost provider configuration and price book are valid")
        return 1 if problems else 0

    from airflow_cost_provider.ledger.store import LedgerError, get_engine, safe_url
    from airflow_cost_provider.report import cost_report, render

    now = dt.datetime.now(dt.timezone.utc)
    since = args.since or now - dt.timedelta(days=30)
    until = args.until or now
    try:
        url = _ledger_url(args.ledger)
        engine = get_engine(url)
        rows = cost_report(engine, args.by, since, until)
    except LedgerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a driver error: name the database, never its password
        target = safe_url(url) if "url" in locals() else "the ledger"
        print(f"error: cannot read {target}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(render(rows, args.by, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
