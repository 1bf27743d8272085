"""`airflow-cost import-storage`: storage costs from billing export files into the ledger.

Its options and the import itself are shared with `import-billing` (cli.import_billing), which keeps
every service of the same files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from airflow_cost_provider.cli import CliError
from airflow_cost_provider.cli.common import add_ledger_option, ledger_url, parse_day

FILE_FORMATS = ("focus", "aws-cur", "gcp-billing-export", "azure-export")


def add_parser(commands: argparse._SubParsersAction) -> None:
    imports = commands.add_parser(
        "import-storage",
        help="import storage costs from billing export files into the ledger",
        description="Import the storage costs (S3, Cloud Storage, Azure storage accounts) of billing export "
        "files. Everything the paths hold is one import: one transaction, nothing written on an error.",
    )
    add_import_options(imports)
    imports.set_defaults(handler=import_storage)


def add_import_options(imports: argparse.ArgumentParser) -> None:
    """The options of import-storage and import-billing."""
    imports.add_argument("--format", required=True, choices=FILE_FORMATS, dest="file_format")
    imports.add_argument(
        "--path",
        required=True,
        action="append",
        dest="paths",
        help="a file, directory or glob, or an s3://, gs:// or abfss:// URL (a prefix reads every file "
        "under it); repeat for several",
    )
    imports.add_argument("--since", help="first billing day to import, YYYY-MM-DD (default: all)")
    imports.add_argument("--until", help="billing day to stop before, YYYY-MM-DD (default: all)")
    imports.add_argument(
        "--replace-days",
        action="store_true",
        help="replace every cost of the provider, billing account and days the files hold (a complete "
        "delivery), instead of the costs with the same key only",
    )
    imports.add_argument(
        "--conn-id",
        help="Airflow connection for URLs (default: aws_default, google_cloud_default, adls_default)",
    )
    add_ledger_option(imports)
    progress = imports.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true", default=None, help="always draw progress bars")
    progress.add_argument("--no-progress", action="store_false", dest="progress", help="never draw them")


LARGE_FILE_BYTES = 20_000_000  # files at least this big get a progress bar while they are read


class RichProgress:
    """Progress bars on stderr: bytes while remote files are fetched, DuckDB's own progress while each
    large file is read."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @staticmethod
    def _name(label: str) -> str:
        name = label.rsplit("/", 1)[-1]
        return name if len(name) <= 40 else name[:37] + "..."

    # fetching (billing.files.FetchProgress)
    def file_started(self, label: str, size: int):
        task = self.progress.add_task(f"fetching {self._name(label)}", total=size or None)
        self._fetching = task
        return lambda done: self.progress.advance(task, done)

    def file_finished(self, label: str) -> None:
        self.progress.remove_task(self._fetching)

    # reading (billing.importer.ScanProgress)
    def scan_started(self, label: str, size: int):
        if size < LARGE_FILE_BYTES:
            return None
        task = self.progress.add_task(f"reading {self._name(label)}", total=size)
        self._reading = task
        return lambda percent: self.progress.update(task, completed=size * min(percent, 100.0) / 100)

    def scan_finished(self, label: str) -> None:
        if getattr(self, "_reading", None) is not None:
            self.progress.remove_task(self._reading)
            self._reading = None


def import_storage(args: argparse.Namespace) -> int:
    return run_import(args, all_services=False)


def run_import(args: argparse.Namespace, all_services: bool) -> int:
    """Read the files, write them in one transaction, print the summary line. `all_services`: the
    whole bill (import-billing), not only storage."""
    import contextlib

    from airflow_cost_provider.billing.errors import BillingDataError, BillingSourceError
    from airflow_cost_provider.billing.files import fetched
    from airflow_cost_provider.billing.importer import read_files, save
    from airflow_cost_provider.billing.registry import file_format
    from airflow_cost_provider.billing.scan import DateWindow
    from airflow_cost_provider.ledger.store import LedgerError, get_engine, safe_url

    fmt = file_format(args.file_format)
    since = parse_day(args.since, "--since") if args.since else None
    until = parse_day(args.until, "--until") if args.until else None
    if since and until and since >= until:
        raise CliError(f"--since {since} is not before --until {until}")
    window = (
        DateWindow(since or dt.date(1970, 1, 1), until or dt.date(9999, 12, 31)) if since or until else None
    )
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    conn_ids = dict.fromkeys(("s3", "gs", "abfss"), args.conn_id)
    started = dt.datetime.now(dt.timezone.utc)
    url = ledger_url(args.ledger)
    try:
        with RichProgress() if show_progress else contextlib.nullcontext() as progress:
            with fetched(args.paths, fmt.accepts, conn_ids, progress) as files:
                if not files:
                    raise CliError(f"no {args.file_format} files found in {', '.join(args.paths)}", status=1)
                collected = read_files(
                    fmt, files, window=window, progress=progress, all_services=all_services
                )
        summary = save(get_engine(url), collected, replace_days=args.replace_days, started_at=started)
    except BillingDataError as error:
        raise CliError(f"{error} (nothing was imported)", status=1) from None
    except (BillingSourceError, LedgerError) as error:
        raise CliError(str(error)) from None
    except CliError:
        raise
    except Exception as error:  # a driver or SDK error: name the database, never its password
        from airflow_cost_provider.billing.errors import redact

        raise CliError(
            f"cannot import into {safe_url(url)}: {type(error).__name__}: {redact(str(error))}"
        ) from None
    print(summary.one_line())
    return 0
