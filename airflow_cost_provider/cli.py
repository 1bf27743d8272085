"""`airflow-cost`: reports from the cost ledger, a check of the configuration and price book, and the
import of storage costs from billing exports."""

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


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO date (YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    from airflow_cost_provider.billing.registry import FILE_FORMATS
    from airflow_cost_provider.report import GROUPINGS, STORAGE_GROUPINGS

    parser = argparse.ArgumentParser(prog="airflow-cost", description="Costs of Airflow task runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser(
        "report",
        help="sum the ledger's costs by DAG, task, run, try or source; `report storage` sums storage costs",
    )
    report.add_argument(
        "kind",
        nargs="?",
        choices=("storage",),
        help="storage: the imported storage costs, by billing day (--since/--until are dates)",
    )
    report.add_argument("--since", help="start of the period (ISO); default: 30 days ago")
    report.add_argument("--until", help="end of the period, exclusive (ISO); default: now")
    report.add_argument(
        "--by",
        choices=sorted({*GROUPINGS, *STORAGE_GROUPINGS}),
        help="task runs: dag, task, run, try or source (default task); storage: resource, service, "
        "usage-class or day (default resource)",
    )
    report.add_argument("--format", choices=("table", "json", "csv"), default="table")
    report.add_argument(
        "--ledger", help="SQLAlchemy URL of the ledger (default: [cost_provider] ledger_conn)"
    )
    commands.add_parser("check", help="validate [cost_provider] and the price book; exit 1 on a problem")
    imports = commands.add_parser(
        "import-storage",
        help="import storage costs from billing export files into the ledger",
        description="Import the storage costs (S3, Cloud Storage, Azure storage accounts) of billing export "
        "files. Everything the paths hold is one import: one transaction, nothing written on an error.",
    )
    imports.add_argument("--format", required=True, choices=list(FILE_FORMATS), dest="file_format")
    imports.add_argument(
        "--path",
        required=True,
        action="append",
        dest="paths",
        help="a file, directory or glob, or an s3://, gs:// or abfss:// URL (a prefix reads every file "
        "under it); repeat for several",
    )
    imports.add_argument("--since", type=_date, help="first billing day to import (default: all)")
    imports.add_argument("--until", type=_date, help="billing day to stop before (default: all)")
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
    imports.add_argument(
        "--ledger", help="SQLAlchemy URL of the ledger (default: [cost_provider] ledger_conn)"
    )
    progress = imports.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true", default=None, help="always draw progress bars")
    progress.add_argument("--no-progress", action="store_false", dest="progress", help="never draw them")
    return parser


def _ledger_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    from airflow_cost_provider.tracker import ledger_url

    return ledger_url()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "import-storage":
        return _import_storage(args)
    if args.command == "report" and args.kind == "storage":
        return _storage_report(parser, args)
    if args.command == "report":
        from airflow_cost_provider.report import GROUPINGS

        args.by = args.by or "task"
        if args.by not in GROUPINGS:
            parser.error(f"report --by {args.by} is for storage costs: use `report storage --by {args.by}`")
        try:
            args.since = _timestamp(args.since) if args.since else None
            args.until = _timestamp(args.until) if args.until else None
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
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


def _import_storage(args: argparse.Namespace) -> int:
    import contextlib

    from airflow_cost_provider.billing.errors import BillingDataError, BillingSourceError
    from airflow_cost_provider.billing.files import fetched
    from airflow_cost_provider.billing.importer import read_files, save
    from airflow_cost_provider.billing.registry import file_format
    from airflow_cost_provider.billing.scan import DateWindow
    from airflow_cost_provider.ledger.store import LedgerError, get_engine, safe_url

    fmt = file_format(args.file_format)
    window = None
    if args.since or args.until:
        window = DateWindow(args.since or dt.date(1970, 1, 1), args.until or dt.date(9999, 12, 31))
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    conn_ids = dict.fromkeys(("s3", "gs", "abfss"), args.conn_id)
    started = dt.datetime.now(dt.timezone.utc)
    url = None
    try:
        with RichProgress() if show_progress else contextlib.nullcontext() as progress:
            with fetched(args.paths, fmt.accepts, conn_ids, progress) as files:
                if not files:
                    print(
                        f"error: no {args.file_format} files found in {', '.join(args.paths)}",
                        file=sys.stderr,
                    )
                    return 1
                collected = read_files(fmt, files, window=window, progress=progress)
        url = _ledger_url(args.ledger)
        summary = save(get_engine(url), collected, replace_days=args.replace_days, started_at=started)
    except BillingDataError as error:
        print(f"error: {error} (nothing was imported)", file=sys.stderr)
        return 1
    except (BillingSourceError, LedgerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        target = safe_url(url) if url else "the billing files"
        print(f"error: cannot import into {target}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(summary.one_line())
    return 0


def _storage_report(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from airflow_cost_provider.ledger.store import LedgerError, get_engine, safe_url
    from airflow_cost_provider.report import STORAGE_GROUPINGS, render_storage, storage_report

    by = args.by or "resource"
    if by not in STORAGE_GROUPINGS:
        parser.error(f"report storage --by must be one of {', '.join(STORAGE_GROUPINGS)}")
    try:
        since = _date(args.since) if args.since else dt.date.today() - dt.timedelta(days=30)
        until = _date(args.until) if args.until else None
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    url = None
    try:
        url = _ledger_url(args.ledger)
        rows = storage_report(get_engine(url), by, since, until)
    except LedgerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        target = safe_url(url) if url else "the ledger"
        print(f"error: cannot read {target}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(render_storage(rows, by, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
