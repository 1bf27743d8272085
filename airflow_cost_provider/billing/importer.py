"""Reading an import's files or API rows into ledger rows, and writing them: one transaction.

Ledger rows are summed per provider + billing account + day + resource + SKU (or usage type) +
usage class + currency (see `billing.scan`). Currencies are never added together: the currency is
part of the key. An import of the whole bill (`all_services`) also keeps the rows of every service,
per service and tag set, for `cost_billing_costs`; its storage rows are the same as a storage import's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import astuple, dataclass, field
from decimal import Decimal

from airflow_cost_provider.billing import focus
from airflow_cost_provider.billing.errors import BillingDataError, redact
from airflow_cost_provider.billing.files import BillingFile, is_parquet, read_error, register_input
from airflow_cost_provider.billing.formats import FileFormat, FocusFormat
from airflow_cost_provider.billing.scan import (
    ROW,
    BillingCost,
    BillingRows,
    ChargeTable,
    DateWindow,
    ProgressCallback,
    StorageCost,
)
from airflow_cost_provider.pricing.money import money_text

log = logging.getLogger(__name__)

__all__ = [
    "BillingCost",
    "BillingRows",
    "CollectedCosts",
    "ImportSummary",
    "StorageCost",
    "read_files",
    "read_rows",
    "save",
]


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
    # an import of the whole bill: its rows of every service (None: a storage import), kept in DuckDB
    # and written a batch at a time, and the files without a tags column, whose rows only a resource
    # id can match
    billing_costs: BillingRows | None = None
    untagged_files: list[str] = field(default_factory=list)
    # what the platform measured per query (Snowflake's QUERY_ATTRIBUTION_HISTORY: query id -> compute
    # credits), kept on the ledger's usage of those queries of `query_credits_source` for reconciliation
    query_credits: dict[str, Decimal] | None = None
    query_credits_source: str | None = None


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
    collected = CollectedCosts(
        source=source,
        costs=table.costs(source),
        untagged_files=list(table.untagged),
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
    if table.all_services:
        collected.billing_costs = table.billing_costs(source)  # from here on they own the table
    return collected


@contextlib.contextmanager
def _charge_table(window: DateWindow | None, all_services: bool) -> Iterator[ChargeTable]:
    """A ChargeTable closed on the way out, unless the rows of a whole bill now hold it."""
    table = ChargeTable(window, all_services)
    try:
        yield table
    except BaseException:
        table.close()
        raise
    if not all_services:
        table.close()


def read_files(
    file_format: FileFormat,
    files: list[BillingFile],
    source: str | None = None,
    window: DateWindow | None = None,
    progress: ScanProgress | None = None,
    all_services: bool = False,
) -> CollectedCosts:
    """Scan each file with DuckDB and roll the sums up. Raises BillingDataError on a bad file or row.
    `all_services`: the whole bill, not only storage."""
    import duckdb

    with _charge_table(window, all_services) as table:
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


def read_rows(
    rows: list[focus.FocusRow],
    source: str,
    label: str,
    window: DateWindow | None = None,
    all_services: bool = False,
) -> CollectedCosts:
    """The same for rows an API returned (already FOCUS-shaped, without tags)."""
    # a source that has no tags gives no tags column: its rows can only be matched by resource id
    names = [n for n in focus.FOCUS_ROW_COLUMNS if n != "Tags" or any(row.Tags is not None for row in rows)]
    with _charge_table(window, all_services) as table:
        columns = ", ".join(f"{name} {focus.FOCUS_ROW_TYPES[name]}" for name in names)
        table.con.execute(f"CREATE TEMP TABLE billing_input ({columns}, {ROW} BIGINT)")
        if rows:
            placeholders = ", ".join("?" * (len(names) + 1))
            table.con.executemany(
                f"INSERT INTO billing_input VALUES ({placeholders})",
                [(*astuple(row)[: len(names)], index) for index, row in enumerate(rows)],
            )
        described = {r[0]: r[1] for r in table.con.execute("DESCRIBE billing_input").fetchall()}
        table.add(FocusFormat().normalise(described, label), label)
        return _collected(table, source, [label], window, from_files=False)


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
    # an import of the whole bill: its rows written and their totals per currency (None: storage only)
    billing_costs_written: int | None = None
    billing_totals: dict[str, Decimal] = field(default_factory=dict)
    untagged_files: list[str] = field(default_factory=list)

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
        if self.untagged_files:
            count = len(self.untagged_files)
            names = ", ".join(self.untagged_files[:3]) + (f" and {count - 3} more" if count > 3 else "")
            found.append(
                f"{count:,} file{'s' if count != 1 else ''} without a tags column (their rows can only be "
                f"matched by resource id): {redact(names)}"
            )
        return found

    def one_line(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in sorted(self.skipped.items()))
        days = f"{self.days[0]} .. {self.days[-1]}" if self.days else "no billing days"
        money = (
            ", ".join(f"{money_text(amount)} {currency}" for currency, amount in self.totals.items())
            or "nothing"
        )
        files = f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}"
        written = f"{self.costs_written:,} daily storage costs, {days}, {money}"
        if self.billing_costs_written is not None:
            billed = (
                ", ".join(
                    f"{money_text(amount)} {currency}" for currency, amount in self.billing_totals.items()
                )
                or "nothing"
            )
            written = (
                f"{self.billing_costs_written:,} daily billing costs, {days}, {billed} (storage: "
                f"{self.costs_written:,} daily storage costs, {money})"
            )
        return (
            f"imported {self.rows_imported:,} of {self.rows_read:,} rows from {files} ({self.source}) "
            f"into {written}; "
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
        } | (
            {}
            if self.billing_costs_written is None
            else {
                "billing_costs_written": self.billing_costs_written,
                "billing_totals": {currency: str(amount) for currency, amount in self.billing_totals.items()},
                "untagged_files": self.untagged_files,
            }
        )


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
    totals = _totals(collected.costs)
    billing = collected.billing_costs
    days = {c.day for c in collected.costs} if billing is None else billing.days()
    billing_totals = {} if billing is None else billing.totals()
    return ImportSummary(
        import_id=import_id,
        source=collected.source,
        files=collected.files,
        rows_read=collected.rows_read,
        rows_imported=collected.rows_imported,
        skipped=dict(collected.skipped),
        costs_written=len(collected.costs),
        days=sorted(days),
        totals=totals,
        window=collected.window,
        empty_files=list(collected.empty_files),
        negative_usage_rows=collected.negative_usage_rows,
        billing_costs_written=None if billing is None else len(billing),
        billing_totals={c: Decimal(total).scaleb(-9) for c, total in billing_totals.items()},
        untagged_files=list(collected.untagged_files),
    )


def _totals(costs: list[StorageCost]) -> dict[str, Decimal]:
    """Per currency, exact: summed in nano-units."""
    nanos: dict[str, int] = defaultdict(int)
    for cost in costs:
        nanos[cost.currency] += cost.amount_nanos
    return {currency: Decimal(total).scaleb(-9) for currency, total in sorted(nanos.items())}
