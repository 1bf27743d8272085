"""`airflow-cost import-billing`: the whole bill of billing export files into the ledger.

The options and the reading are import-storage's (cli.imports): the same files, every service kept,
per service, resource, SKU and tag set, in `cost_billing_costs`; the storage rows still go to the
storage costs, so storage reports stay as they are.
"""

from __future__ import annotations

import argparse

from airflow_cost_provider.cli import imports


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import-billing",
        help="import every service's costs, with their tags, from billing export files into the ledger",
        description="Import the whole bill of billing export files (FOCUS, AWS CUR 2.0, GCP billing export, "
        "Azure exports): every service, per day, resource, SKU, usage class, currency and tag set, and the "
        "storage costs as import-storage does. Everything the paths hold is one import: one transaction, "
        "nothing written on an error.",
    )
    imports.add_import_options(parser)
    parser.set_defaults(handler=import_billing)


def import_billing(args: argparse.Namespace) -> int:
    return imports.run_import(args, all_services=True)
