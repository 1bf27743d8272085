"""`airflow-cost check`: every [cost_provider] option, the price book, and the ledger."""

from __future__ import annotations

import argparse
import sys

from airflow_cost_provider.cli.common import add_ledger_option


def add_parser(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "check",
        help="validate [cost_provider], the price book and the ledger; exit 1 on any problem",
        description="Validate every [cost_provider] option, the price book, the budgets file and the ledger "
        "(reachable, at the schema this version expects); warn about budgets in a currency the ledger never "
        "saw. Each problem is printed once; exit status 1 when there is one.",
    )
    add_ledger_option(check)
    check.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from airflow_cost_provider.checks import check_all

    outcome = check_all(args.ledger)
    for problem in outcome.problems:
        print(f"error: {problem}", file=sys.stderr)
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in outcome.notes:
        print(f"note: {note}", file=sys.stderr)
    if outcome.problems:
        return 1
    print("cost provider configuration, price book and ledger are valid")
    return 0
