"""Reading an import's files or API rows into ledger rows, and writing them: one transaction.

Ledger rows are summed per provider + billing account + day + resource + SKU (or usage type) +
usage class + currency (see `billing.scan`). Currencies are never added together: the currency is
part of the key.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from dataclasses import astuple, dataclass, field
from decimal import Decimal

from airflow_cost_provider.billing import focus
from airflow_cost_provider.billing.errors import BillingDataError, redact
from airflow_cost_provider.billing.files import BillingFile, is_parquet, read_error, register_input
from airflow_cost_provider.billing.formats import FileFormat, FocusFormat
from airflow_cost_provider.billing.scan import ROW, ChargeTable, DateWindow, ProgressCallback, StorageCost

log = logging.getLogger(__name__)

__all__ = ["CollectedCosts", "ImportSummary", "StorageCost", "read_files", "read_rows", "save"]


@dataclass
class CollectedCosts:
    """What one import read: the rolled-up costs and the counts for its summary."""

    source: str
    costs: list[StorageCost]
    files: list[str] = field(default_factory=list)
    window: DateWindow | None = None
    rows_read: int = 0
    rows_imported: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    days_with_data: set[dt.date] = field(default_factory=set)
    # set by sources whose data says whether it is final (Cost Explorer's Estimated flag)
    estimated_days: set[dt.date] = field(default_factory=set)
    # imported but suspicious, told in the summary: files without a data row, and Usage rows with a
    # negative cost (credits, adjustments and refunds have a ChargeCategory of their own)
    empty_files: list[str] = field(default_factory=list)
    negative_usage_rows: int = 0


class ScanProgress:
    """What the CLI and the operator are told while files are read (the CLI draws a bar)."""

    def scan_started(self, label: str, size: int) -> ProgressCallback | None:
        return None

    def scan_finished(self, label: str) -> None:
        pass


def _collected(
    table: ChargeTable, source: str, files: list[str], window: DateWindow | None, from_files: bool = True
) -> CollectedCosts:
    rows_read, rows_imported, skipped = table.counts()
    return CollectedCosts(
        source=source,
        costs=table.costs(source),
        files=files,
        window=window,
        rows_read=rows_read,
        rows_imported=rows_imported,
        skipped=skipped,
        days_with_data=table.days(),
        # an API may have nothing to say, and Cost Explorer and Cost Management net credits into usage
        empty_files=list(table.empty) if from_files else [],
        negative_usage_rows=table.negative_usage() if from_files else 0,
    )


def read_files(
    file_format: FileFormat,
    files: list[BillingFile],
    source: str | None = None,
    window: DateWindow | None = None,
    progress: ScanProgress | None = None,
) -> CollectedCosts:
    """Scan each file with DuckDB and roll the sums up. Raises BillingDataError on a bad file or row."""
    import duckdb

    table = ChargeTable(window)
    try:
        for file in files:
            failures: list[BillingDataError] = []  # what stopped a CSV stream DuckDB was reading
            columns = register_input(table.con, file, failures)
            normalised = file_format.normalise(columns, file.label)
            callback = progress.scan_started(file.label, file.size) if progress else None
            try:
                table.add(
                    normalised,
                    file.label,
                    callback,
                    reopen=lambda file=file, failures=failures: register_input(table.con, file, failures),
                    rereadable=is_parquet(file),  # CSV and JSON are streams: read once
                )
            except duckdb.Error as error:
                raise read_error(file, error, failures) or error from None
            if progress:
                progress.scan_finished(file.label)
        return _collected(table, source or file_format.name, [f.label for f in files], window)
    finally:
        table.close()


def read_rows(
    rows: list[focus.FocusRow], source: str, label: str, window: DateWindow | None = None
) -> CollectedCosts:
    """The same for rows an API returned (already FOCUS-shaped)."""
    table = ChargeTable(window)
    try:
        columns = ", ".join(f"{name} {focus.FOCUS_ROW_TYPES[name]}" for name in focus.FOCUS_ROW_COLUMNS)
        table.con.execute(f"CREATE TEMP TABLE billing_input ({columns}, {ROW} BIGINT)")
        if rows:
            placeholders = ", ".join("?" * (len(focus.FOCUS_ROW_COLUMNS) + 1))
            table.con.executemany(
                f"INSERT INTO billing_input VALUES ({placeholders})",
                [(*astuple(row), index) for index, row in enumerate(rows)],
            )
        described = {r[0]: r[1] for r in table.con.execute("DESCRIBE billing_input").fetchall()}
        table.add(FocusFormat().normalise(described, label), label)
        return _collected(table, source, [label], window, from_files=False)
    finally:
        table.close()


@dataclass(frozen=True)
class ImportSummary:
    import_id: int
    source: str
    files: list[str]
    rows_read: int
    rows_imported: int
    skipped: dict[str, int]
    costs_written: int
    days: list[dt.date]
    totals: dict[str, Decimal]  # per currency, never added together
    window: DateWindow | None = None
    empty_files: list[str] = field(default_factory=list)
    negative_usage_rows: int = 0

    def warnings(self) -> list[str]:
        """What was imported but looks wrong: files without rows, Usage rows with a negative cost."""
        found = []
        if self.empty_files:
            count = len(self.empty_files)
            names = ", ".join(self.empty_files[:3]) + (f" and {count - 3} more" if count > 3 else "")
            found.append(f"{count:,} file{'s' if count != 1 else ''} with no rows: {redact(names)}")
        if self.negative_usage_rows:
            count = self.negative_usage_rows
            found.append(f"{count:,} Usage row{'s' if count != 1 else ''} with negative cost")
        return found

    def one_line(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in sorted(self.skipped.items()))
        days = f"{self.days[0]} .. {self.days[-1]}" if self.days else "no billing days"
        money = (
            ", ".join(f"{amount:,.2f} {currency}" for currency, amount in self.totals.items()) or "nothing"
        )
        files = f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}"
        return (
            f"imported {self.rows_imported:,} of {self.rows_read:,} rows from {files} ({self.source}) "
            f"into {self.costs_written:,} daily storage costs, {days}, {money}; "
            f"skipped {skipped:,}"
            + (f" ({reasons})" if reasons else "")
            + "".join(f"; {warning}" for warning in self.warnings())
        )

    def as_dict(self) -> dict:
        return {
            "import_id": self.import_id,
            "source": self.source,
            "files": self.files,
            "rows_read": self.rows_read,
            "rows_imported": self.rows_imported,
            "rows_skipped": dict(self.skipped),
            "costs_written": self.costs_written,
            "first_day": self.days[0].isoformat() if self.days else None,
            "last_day": self.days[-1].isoformat() if self.days else None,
            "totals": {currency: str(amount) for currency, amount in self.totals.items()},
            "empty_files": self.empty_files,
            "negative_usage_rows": self.negative_usage_rows,
        }


def save(
    engine,
    collected: CollectedCosts,
    *,
    replace_days: bool = False,
    watermark_key: str | None = None,
    run: dict[str, str] | None = None,
    started_at: dt.datetime | None = None,
) -> ImportSummary:
    """Write the import in one transaction (see ledger.store.write_storage_import)."""
    from airflow_cost_provider.ledger import store

    started_at = started_at or dt.datetime.now(dt.timezone.utc)
    import_id = store.write_storage_import(
        engine,
        collected,
        replace_days=replace_days,
        watermark_key=watermark_key,
        run=run,
        started_at=started_at,
    )
    nanos: dict[str, int] = defaultdict(int)
    for cost in collected.costs:
        nanos[cost.currency] += cost.amount_nanos
    totals = {currency: Decimal(total).scaleb(-9) for currency, total in nanos.items()}
    return ImportSummary(
        import_id=import_id,
        source=collected.source,
        files=collected.files,
        rows_read=collected.rows_read,
        rows_imported=collected.rows_imported,
        skipped=dict(collected.skipped),
        costs_written=len(collected.costs),
        days=sorted({c.day for c in collected.costs}),
        totals=dict(sorted(totals.items())),
        window=collected.window,
        empty_files=list(collected.empty_files),
        negative_usage_rows=collected.negative_usage_rows,
    )
