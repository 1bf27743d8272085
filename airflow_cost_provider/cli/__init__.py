"""`airflow-cost`: reports from the cost ledger, budgets, a check of the configuration, and billing
imports.

One module per command; all of them print through `cli.output`. Nothing here imports Airflow unless a
command needs it (a ledger given as an Airflow connection id), so a report answers quickly."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from airflow_cost_provider.version import __version__


class CliError(Exception):
    """Bad input or an unusable ledger: printed as one line, exit status 2 unless said otherwise."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse with errors on one line (the usage is one `--help` away)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    from airflow_cost_provider.cli import (
        budgets,
        check,
        export,
        import_billing,
        imports,
        prune,
        reconcile,
        replay,
        report,
    )

    parser = Parser(
        prog="airflow-cost",
        description="What Airflow task runs cost: reports from the cost ledger, a configuration check, "
        "and the import of billing data.",
    )
    parser.add_argument("--version", action="version", version=f"airflow-cost {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    report.add_parser(commands)
    check.add_parser(commands)
    imports.add_parser(commands)
    import_billing.add_parser(commands)
    budgets.add_parser(commands)
    replay.add_parser(commands)
    export.add_parser(commands)
    prune.add_parser(commands)
    reconcile.add_parser(commands)
    return parser


def _quiet_logs() -> None:
    # Library INFO lines (Alembic migrating an old ledger, a driver) are not the command's output.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    for name in ("alembic", "airflow_cost_provider"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    _quiet_logs()
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        one_line = " ".join(str(error).split())  # a driver's message may span lines
        print(f"airflow-cost {args.command}: error: {one_line}", file=sys.stderr)
        return error.status
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, and keep Python from complaining at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
