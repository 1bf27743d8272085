"""DuckDB over billing files (or an API's rows): validate, filter, sum, classify, roll up.

Every source hands over a SELECT that renames its columns to the FOCUS names (`Normalised`). One pass
over each file types them, finds malformed rows, skips what is not object storage or outside the
window, and sums the rest per charge (provider, billing account, day, resource, usage type, SKU,
unit, charge category and class, currency) into a table that collects every file of the import.
The usage class of each distinct usage type and the bytes each storage unit stands for are decided
in Python, on the few distinct values, and joined back; a last aggregate gives the ledger rows.

An import of the whole bill (`all_services`) skips no service: it keeps each charge's service and
tags in the key as well, gives the storage charges the same storage rows as before, and gives every
charge a row of the bill (`BillingCost`). Tags are parsed once per distinct tag text, in DuckDB.

Amounts are DECIMAL(38,12) in DuckDB and Decimal in Python: nothing is summed in floating point.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from airflow_cost_provider.billing import focus
from airflow_cost_provider.billing.errors import BillingDataError

DECIMAL = focus.DECIMAL_TYPE
TIMESTAMP = "TIMESTAMPTZ"
# normalised column -> the type it is cast to; anything else is text
VALUE_TYPES = {
    focus.BILLED_COST: DECIMAL,
    focus.EFFECTIVE_COST: DECIMAL,
    focus.LIST_COST: DECIMAL,
    focus.CONSUMED_QUANTITY: DECIMAL,
    focus.CHARGE_PERIOD_START: TIMESTAMP,
    focus.CHARGE_PERIOD_END: TIMESTAMP,
}
REQUIRED = (
    focus.BILLED_COST,
    focus.BILLING_CURRENCY,
    focus.CHARGE_PERIOD_START,
    focus.CHARGE_PERIOD_END,
)
# the row's tags or labels as JSON text: an object (Azure may leave out its braces), or a list of
# {key, value} (GCP labels); NULL: none
TAGS = "x_Tags"
TEXT_COLUMNS = (
    focus.BILLING_ACCOUNT_ID,
    focus.BILLING_CURRENCY,
    focus.CHARGE_CATEGORY,
    focus.CHARGE_CLASS,
    focus.SERVICE_NAME,
    focus.RESOURCE_ID,
    focus.REGION_ID,
    focus.SKU_ID,
    focus.CONSUMED_UNIT,
    focus.X_PROVIDER,
    focus.X_USAGE_TYPE,
    TAGS,
)
AMOUNTS = (focus.BILLED_COST, focus.EFFECTIVE_COST, focus.LIST_COST)
# The ledger keeps amounts as integer nano-units in a signed 64-bit BIGINT: larger ones cannot be stored
MAX_AMOUNT = Decimal(2**63 - 1).scaleb(-9)  # 9223372036.854775807
# DECIMAL(38,12) holds 26 digits before the point
MAX_QUANTITY = Decimal(10) ** 26
IS_STORAGE = "x_IsStorage"
# tag keys that hold the OpenLineage run id this project sets on jobs (CUR 2.0 and legacy CUR prefix
# user tags)
RUN_ID_TAG_KEYS = ("openlineage_run_id", "user_openlineage_run_id", "user:openlineage_run_id")
ROW = "__row"  # 0-based row of the record in its file (data rows, header excluded)
# the sizes of the ledger's text columns (ledger.schema.storage_costs)
LEDGER_TEXT_SIZES = {
    "provider": 32,
    "billing_account": 100,
    "resource_id": 400,
    "sku": 200,
    "unit": 64,
    "usage_type": 250,
    "service": 100,
    "region": 64,
    "tagged_run_id": 36,
}

# skip reasons, as counted in the import summary
MALFORMED = "malformed"
NOT_STORAGE = "not_storage"
OUTSIDE_WINDOW = "outside_window"

_CURRENCY = re.compile(r"[A-Z]{3}")
BILL_SORT_MEMORY = "512MB"  # DuckDB's limit while the rows of a whole bill are summed and sorted


@dataclass(frozen=True)
class DateWindow:
    """Billing days from `start` to `end`, end exclusive."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty billing window {self.start} .. {self.end}")

    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=n) for n in range((self.end - self.start).days)]

    def __contains__(self, day: object) -> bool:
        return isinstance(day, dt.date) and self.start <= day < self.end

    def __str__(self) -> str:
        return f"{self.start} .. {self.end - dt.timedelta(days=1)}"


@dataclass(frozen=True)
class Normalised:
    """A source's SELECT over the relation `billing_input`, producing ROW, the FOCUS columns (still
    in the file's own types), IS_STORAGE and TAGS; and, for error messages, each FOCUS column's
    origin. `tags_column`: the column the tags come from, None when the data has none."""

    sql: str
    origin: dict[str, str]
    tags_column: str | None = None


class StorageCost(NamedTuple):
    """One ledger row: a resource's cost of one day for one SKU, usage class and currency. Amounts
    are integers of nano-units, rounded once (half to even) from the exact sums. A tuple, in the
    ledger's column order: imports write tens of thousands of them."""

    provider: str
    billing_account: str
    day: dt.date
    resource_id: str
    sku: str
    usage_class: str
    currency: str
    amount_nanos: int  # billed cost, credits and corrections included
    effective_nanos: int | None
    list_nanos: int | None
    credit_nanos: int
    correction_nanos: int
    quantity: str | None  # exact decimal text, in `unit`
    unit: str | None
    storage_bytes: int | None
    usage_type: str | None
    service: str | None
    region: str | None
    source_rows: int
    source: str

    @property
    def amount(self) -> Decimal:
        return Decimal(self.amount_nanos).scaleb(-9)

    @property
    def credits(self) -> Decimal:
        return Decimal(self.credit_nanos).scaleb(-9)

    @property
    def key(self) -> tuple:
        return (
            self.provider,
            self.billing_account,
            self.day,
            self.resource_id,
            self.sku,
            self.usage_class,
            self.currency,
        )


class BillingCost(NamedTuple):
    """One row of the whole bill: a resource's cost of one day for one service, SKU, usage class,
    currency and tag set, in the order of the ledger's `cost_billing_costs` columns. `tags` is the
    canonical JSON text of the tags (keys sorted), `row_key` the digest of the key (see `row_key`)."""

    row_key: str
    provider: str
    billing_account: str
    day: dt.date
    usage_hour: int | None  # the UTC hour of a charge billed per hour (see `hour_sql`); None: the day
    service: str
    resource_id: str
    sku: str
    usage_class: str
    currency: str
    amount_nanos: int
    effective_nanos: int | None
    list_nanos: int | None
    credit_nanos: int
    correction_nanos: int
    quantity: str | None
    unit: str | None
    usage_type: str | None
    region: str | None
    tags: str | None
    tagged_run_id: str | None
    source_rows: int
    source: str

    @property
    def amount(self) -> Decimal:
        return Decimal(self.amount_nanos).scaleb(-9)


_KEY_SEPARATOR = "\x1f"  # the unit separator: in no id, SKU or tag text a bill holds


def row_key(
    day: dt.date,
    provider: str,
    billing_account: str,
    service: str,
    resource_id: str,
    sku: str,
    usage_class: str,
    currency: str,
    tags: str | None,
    hour: int | None = None,
) -> str:
    """The sha256 hex digest of a bill row's key: its columns joined by U+001F, tags as canonical
    JSON (keys sorted, no spaces) or '' when none; the day of an hourly row with its hour
    (`2026-11-02T03`), so a day-level row keeps the key it always had. `BillingCost.row_key` is this,
    computed in DuckDB."""
    moment = day.isoformat() if hour is None else f"{day.isoformat()}T{hour:02d}"
    parts = (moment, provider, billing_account, service, resource_id, sku, usage_class, currency)
    return hashlib.sha256(_KEY_SEPARATOR.join((*parts, tags or "")).encode()).hexdigest()


def connect(memory_limit: str = "768MB", threads: int | None = None):
    """A DuckDB connection for one import: UTC, bounded memory, no terminal progress bar of its own."""
    import duckdb

    con = duckdb.connect(config={"memory_limit": memory_limit, "preserve_insertion_order": False})
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = true")  # lets query_progress() report; printing stays off
    con.execute("SET enable_progress_bar_print = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _already_typed(source_type: str | None, target: str) -> bool:
    """A column that already has its type needs no cast: a Parquet decimal of at most 12 decimal
    places sums exactly as it is (the sums are stored at 12), and a timestamp with a time zone is one."""
    if source_type is None:
        return False
    source_type = source_type.upper()
    if target == TIMESTAMP:
        return source_type == "TIMESTAMP WITH TIME ZONE"
    match = re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", source_type.replace(" ", ""))
    return match is not None and int(match[2]) <= 12


def _typed_sql(normalised_sql: str, types: dict[str, str] | None = None) -> str:
    """Cast the value columns and flag malformed rows: a value that does not cast (NaN, text, a
    number too large), a required value missing, an amount the ledger cannot store, a charge period
    that ends before it starts. Columns already of their type are not cast."""
    types = types or {}
    typed = [ROW]
    bad = []
    value: dict[str, str] = {}  # the typed expression of each value column
    for name in (*TEXT_COLUMNS, *VALUE_TYPES):
        column = quote(name)
        if name in VALUE_TYPES and not _already_typed(types.get(name), VALUE_TYPES[name]):
            value[name] = f"TRY_CAST({column} AS {VALUE_TYPES[name]})"
            typed.append(f"{value[name]} AS {column}")
            bad.append(f"({column} IS NOT NULL AND {value[name]} IS NULL)")
        elif name in VALUE_TYPES or types.get(name, "").upper() == "VARCHAR":
            value[name] = column
            typed.append(column)
        else:
            typed.append(f"CAST({column} AS VARCHAR) AS {column}")
        if name in REQUIRED:
            bad.append(f"{column} IS NULL")
    bad.extend(f"abs({value[name]}) > {MAX_AMOUNT}" for name in AMOUNTS)
    bad.append(f"{value[focus.CHARGE_PERIOD_END]} < {value[focus.CHARGE_PERIOD_START]}")
    typed.append(f"COALESCE(CAST({quote(IS_STORAGE)} AS BOOLEAN), false) AS {quote(IS_STORAGE)}")
    typed.append(f"({' OR '.join(bad)}) AS __bad")
    return f"SELECT {', '.join(typed)} FROM ({normalised_sql}) AS normalised"


_KEYS = (
    (focus.X_PROVIDER, "provider"),
    (focus.BILLING_ACCOUNT_ID, "billing_account"),
    ("__day", "day"),
    (focus.RESOURCE_ID, "resource_id"),
    (focus.X_USAGE_TYPE, "usage_type"),
    (focus.SKU_ID, "sku_id"),
    (focus.CONSUMED_UNIT, "unit"),
    (focus.CHARGE_CATEGORY, "charge_category"),
    (focus.CHARGE_CLASS, "charge_class"),
)
CHARGES_TABLE = """
CREATE TEMP TABLE charges (
  file_index INTEGER, skip VARCHAR, provider VARCHAR, billing_account VARCHAR, day DATE,
  usage_hour TINYINT, resource_id VARCHAR, usage_type VARCHAR, sku_id VARCHAR, unit VARCHAR,
  charge_category VARCHAR, charge_class VARCHAR, currency VARCHAR, billed {decimal}, effective {decimal}, list_cost {decimal},
  quantity {decimal}, rows BIGINT, service VARCHAR, region VARCHAR, negative_usage BIGINT,
  is_storage BOOLEAN, tags VARCHAR
)
""".format(decimal="DECIMAL(38,12)")

# The entries of a tag text whose value is set, or NULL when the text is no JSON object (with or
# without its braces) or list of {key, value}; run on the few distinct tag texts of an import.
TAG_ENTRIES_MACRO = """
CREATE OR REPLACE TEMP MACRO tag_entries(raw) AS (
  WITH wrapped AS (
    SELECT CASE WHEN left(trim(raw), 1) IN ('{', '[') THEN trim(raw) ELSE '{' || trim(raw) || '}' END AS text
  ), typed AS (
    SELECT CASE WHEN NOT json_valid(text) THEN NULL
      WHEN json_type(text) = 'OBJECT' THEN map_entries(json_transform(text, '"MAP(VARCHAR, VARCHAR)"'))
      WHEN json_type(text) = 'ARRAY' THEN json_transform(text, '[{"key": "VARCHAR", "value": "VARCHAR"}]')
    END AS entries
    FROM wrapped
  )
  SELECT list_filter(entries, lambda e: e.key IS NOT NULL AND e.value IS NOT NULL AND e.value <> '')
  FROM typed
)
"""


def hour_sql(start: str, end: str) -> str:
    """DuckDB SQL: the UTC hour (0-23) of a charge period within one clock hour (an hourly export's
    row: 10:00 to 11:00, or part of it), else NULL (a day, a month, or an instant)."""
    return (
        f"CASE WHEN {end} > {start} AND {end} <= date_trunc('hour', {start}) + INTERVAL 1 HOUR "
        f"THEN CAST(hour({start}) AS TINYINT) END"
    )


def _keys(all_services: bool) -> tuple[tuple[str, str], ...]:
    """The columns charges are summed per: an import of the whole bill keeps service, tags and the
    hour of hourly charges (but storage's) apart."""
    keys = (*_KEYS, (focus.BILLING_CURRENCY, "currency"))
    if all_services:
        keys += (
            (focus.SERVICE_NAME, "service"),
            (IS_STORAGE, "is_storage"),
            (TAGS, "tags"),
            ("__hour", "usage_hour"),
        )
    return keys


def _sums(all_services: bool) -> str:
    if all_services:
        return _SUMS
    return f"{_SUMS},\n  any_value({quote(focus.SERVICE_NAME)}) AS service, true AS is_storage, NULL AS tags"


def _keyed_cte(
    normalised_sql: str, window: DateWindow | None, types: dict[str, str] | None, all_services: bool = False
) -> str:
    """The rows typed, dated, and marked with why they are skipped (NULL: imported)."""
    in_window = "true"
    if window is not None:
        in_window = f"(__day >= DATE '{window.start}' AND __day < DATE '{window.end}')"
    return f"""
WITH typed AS ({_typed_sql(normalised_sql, types)}),
dated AS (
  SELECT *, CAST({quote(focus.CHARGE_PERIOD_START)} AS DATE) AS __day,
    -- storage is billed and reported per day (no task runs on a bucket by the hour)
    CASE WHEN NOT {quote(IS_STORAGE)}
      THEN {hour_sql(quote(focus.CHARGE_PERIOD_START), quote(focus.CHARGE_PERIOD_END))} END AS __hour
  FROM typed
),
keyed AS (
  SELECT *,
    CASE WHEN __bad THEN '{MALFORMED}'
         WHEN NOT {"true" if all_services else quote(IS_STORAGE)} THEN '{NOT_STORAGE}'
         WHEN NOT {in_window} THEN '{OUTSIDE_WINDOW}'
    END AS __skip
  FROM dated
)"""


# a Usage charge below zero that is no correction: credits, adjustments and refunds have their own
# ChargeCategory, so this is likely an export or mapping error (reported, not refused)
NEGATIVE_USAGE = (
    f"{quote(focus.CHARGE_CATEGORY)} = '{focus.USAGE}' AND {quote(focus.BILLED_COST)} < 0 "
    f"AND {quote(focus.CHARGE_CLASS)} IS DISTINCT FROM '{focus.CORRECTION}'"
)
_SUMS = f"""
  sum({quote(focus.BILLED_COST)}) AS billed,
  sum({quote(focus.EFFECTIVE_COST)}) AS effective,
  sum({quote(focus.LIST_COST)}) AS list_cost,
  sum({quote(focus.CONSUMED_QUANTITY)}) AS quantity,
  count(*) AS rows,
  any_value({quote(focus.REGION_ID)}) AS region,
  count(*) FILTER (WHERE __skip IS NULL AND {NEGATIVE_USAGE}) AS negative_usage"""


def aggregate_sql(
    normalised_sql: str,
    window: DateWindow | None,
    file_index: int = 0,
    types: dict[str, str] | None = None,
    all_services: bool = False,
) -> str:
    """One pass over a stream: its charges summed per key, the rows skipped summed per reason."""
    keys = ", ".join(
        f"CASE WHEN __skip IS NULL THEN {quote(column)} END AS {alias}"
        for column, alias in _keys(all_services)
    )
    return f"""{_keyed_cte(normalised_sql, window, types, all_services)}
SELECT {int(file_index)} AS file_index, __skip AS skip, {keys}, {_sums(all_services)}
FROM keyed
GROUP BY ALL
"""


def skipped_sql(
    normalised_sql: str,
    window: DateWindow | None,
    file_index: int = 0,
    types: dict[str, str] | None = None,
    all_services: bool = False,
) -> str:
    """The rows not imported, per reason: a pass that reads only the columns that decide it."""
    nothing = ", ".join(f"NULL AS {alias}" for _, alias in _keys(True))
    sums = "NULL AS billed, NULL AS effective, NULL AS list_cost, NULL AS quantity, count(*) AS rows"
    return f"""{_keyed_cte(normalised_sql, window, types, all_services)}
SELECT {int(file_index)} AS file_index, __skip AS skip, {nothing}, {sums}, NULL AS region,
  0 AS negative_usage
FROM keyed
WHERE __skip IS NOT NULL
GROUP BY __skip
"""


def charges_sql(
    normalised_sql: str,
    window: DateWindow | None,
    file_index: int = 0,
    types: dict[str, str] | None = None,
    all_services: bool = False,
) -> str:
    """The imported rows summed per key: only they reach the aggregate."""
    keys = ", ".join(f"{quote(column)} AS {alias}" for column, alias in _keys(all_services))
    return f"""{_keyed_cte(normalised_sql, window, types, all_services)}
SELECT {int(file_index)} AS file_index, NULL AS skip, {keys}, {_sums(all_services)}
FROM keyed
WHERE __skip IS NULL
GROUP BY ALL
"""


ProgressCallback = Callable[[float], None]


@contextlib.contextmanager
def _reporting_progress(con, progress: ProgressCallback | None) -> Iterator[None]:
    """Poll DuckDB's own progress of the running query from a side thread."""
    if progress is None:
        yield
        return
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.2):
            with contextlib.suppress(Exception):
                value = con.query_progress()
                if value is not None and value >= 0:
                    progress(float(value))

    thread = threading.Thread(target=poll, name="billing-scan-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        progress(100.0)


class ChargeTable:
    """The sums of every file (or page of API rows) of one import, in DuckDB until rolled up."""

    def __init__(self, window: DateWindow | None = None, all_services: bool = False) -> None:
        self.window = window
        self.all_services = all_services
        self.con = connect()
        self.con.execute(CHARGES_TABLE)
        if all_services:
            self.con.execute(TAG_ENTRIES_MACRO)
        self.files = 0
        self.labels: list[str] = []  # per file_index
        self.origins: list[dict[str, str]] = []
        self.empty: list[str] = []  # files without a single data row
        self.untagged: list[str] = []  # files (or API pages) without a tags column

    def close(self) -> None:
        self.con.close()

    def add(
        self,
        normalised: Normalised,
        label: str,
        progress: ProgressCallback | None = None,
        reopen: Callable[[], object] | None = None,
        rereadable: bool = True,
    ) -> None:
        """Sum the relation `billing_input` (registered on `self.con`) into the table.

        Raises BillingDataError naming `label`, the row and the column of the first malformed row;
        `reopen` registers the input again first. A stream (`rereadable=False`, CSV and JSON read
        through pyarrow) is read in a single pass.
        """
        index = self.files
        self.files += 1
        self.labels.append(label)
        self.origins.append(normalised.origin)
        con = self.con
        types = {row[0]: row[1] for row in con.execute(f"DESCRIBE {normalised.sql}").fetchall()}
        query = (normalised.sql, self.window, index, types, self.all_services)
        if self.all_services and normalised.tags_column is None:
            self.untagged.append(label)
        with _reporting_progress(con, progress):
            if rereadable and not self.all_services:
                # a cheap pass over the few columns that decide what is skipped, then the sums of
                # the rest: other services never reach the aggregate (the whole bill: they all do)
                con.execute(f"INSERT INTO charges BY NAME {skipped_sql(*query)}")
            else:
                con.execute(f"INSERT INTO charges BY NAME {aggregate_sql(*query)}")
            malformed = con.execute(
                "SELECT sum(rows) FROM charges WHERE file_index = ? AND skip = ?", [index, MALFORMED]
            ).fetchone()[0]
            if rereadable and not self.all_services and not malformed:
                con.execute(f"INSERT INTO charges BY NAME {charges_sql(*query)}")
        if not con.execute("SELECT count(*) FROM charges WHERE file_index = ?", [index]).fetchone()[0]:
            self.empty.append(label)
        currencies = [
            row[0]
            for row in con.execute(
                "SELECT DISTINCT currency FROM charges WHERE file_index = ? AND currency IS NOT NULL", [index]
            ).fetchall()
        ]
        wrong = [c for c in currencies if not _CURRENCY.fullmatch(c)]
        if malformed or wrong:
            if reopen:
                reopen()
            if malformed:
                first = con.execute(
                    f"SELECT min({ROW}) FROM ({_typed_sql(normalised.sql, types)}) AS typed WHERE __bad"
                ).fetchone()[0]
                if reopen:
                    reopen()
                raise explain_row(con, normalised, label, first)
            raise _currency_error(con, normalised, label, sorted(wrong)[0])
        if self.all_services and normalised.tags_column is not None:
            self._check_tags(normalised, label, index, reopen)

    def _check_tags(
        self, normalised: Normalised, label: str, index: int, reopen: Callable[[], object] | None
    ) -> None:
        """Every distinct tag text of the file is a JSON object or a list of {key, value}."""
        con = self.con
        bad = con.execute(
            "SELECT min(tags) FROM (SELECT DISTINCT tags FROM charges WHERE file_index = ? AND tags IS NOT NULL) "
            "WHERE tag_entries(tags) IS NULL",
            [index],
        ).fetchone()[0]
        if bad is None:
            return
        if reopen:
            reopen()
        row = con.execute(
            f"SELECT min({ROW}) FROM ({normalised.sql}) AS normalised WHERE {quote(TAGS)} = ?", [bad]
        ).fetchone()[0]
        raise BillingDataError(
            label,
            f"{bad[:80]!r} is not a JSON object of tags (nor a list of key and value)",
            row=None if row is None else row + 1,
            column=normalised.tags_column,
        )

    # ------------------------------------------------------------------ what was read

    def counts(self) -> tuple[int, int, Counter[str]]:
        """Rows read, rows imported, rows skipped per reason."""
        read = imported = 0
        skipped: Counter[str] = Counter()
        for skip, rows in self.con.execute("SELECT skip, sum(rows) FROM charges GROUP BY skip").fetchall():
            read += int(rows)
            if skip is None:
                imported += int(rows)
            else:
                skipped[skip] += int(rows)
        return read, imported, skipped

    def negative_usage(self) -> int:
        """Imported Usage rows with a negative cost (see NEGATIVE_USAGE)."""
        found = self.con.execute("SELECT sum(negative_usage) FROM charges WHERE skip IS NULL").fetchone()[0]
        return int(found or 0)

    def days(self) -> set[dt.date]:
        return {
            row[0]
            for row in self.con.execute("SELECT DISTINCT day FROM charges WHERE skip IS NULL").fetchall()
        }

    # ------------------------------------------------------------------ the ledger rows

    def _lookup_table(self, name: str, columns: str, rows: list[tuple]) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} ({columns})")
        if rows:
            placeholders = ", ".join("?" * len(rows[0]))
            self.con.executemany(f"INSERT INTO {name} VALUES ({placeholders})", rows)

    def _lookup_tables(self) -> None:
        """Usage classes, storage units and provider names of the distinct values only."""
        con = self.con
        combos = con.execute(
            "SELECT DISTINCT COALESCE(usage_type, sku_id), unit, charge_category FROM charges WHERE skip IS NULL"
        ).fetchall()
        self._lookup_table(
            "usage_classes",
            "hint VARCHAR, unit VARCHAR, charge_category VARCHAR, usage_class VARCHAR",
            [(*combo, focus.usage_class(*combo)) for combo in combos],
        )
        units = [
            row[0] for row in con.execute("SELECT DISTINCT unit FROM charges WHERE skip IS NULL").fetchall()
        ]
        self._lookup_table(
            "storage_units",
            "unit VARCHAR, bytes_per_unit DOUBLE, period VARCHAR",
            [(unit, *known) for unit in units if (known := focus.storage_unit(unit))],
        )
        raw = [
            row[0]
            for row in con.execute("SELECT DISTINCT provider FROM charges WHERE skip IS NULL").fetchall()
        ]
        self._lookup_table("providers", "raw VARCHAR, provider VARCHAR", [(r, _provider(r)) for r in raw])

    def costs(self, source: str) -> list[StorageCost]:
        """The ledger rows: usage classes joined in, summed per ledger key, rounded to nano-units,
        text cut to the ledger's column sizes. Raises BillingDataError when a sum is too large for
        the ledger (every row was in range, their sum is not). An import of the whole bill gives
        its storage charges only."""
        return self._fetch(source, StorageCost, billing=False)

    def billing_costs(self, source: str) -> BillingRows:
        """The rows of the whole bill (storage included), per service and tag set as well, kept in
        DuckDB and read in batches (see BillingRows), which now hold the table open; the charges
        are dropped, so this comes after every count. Raises BillingDataError as `costs` does,
        before any of them is written."""
        import duckdb

        if not self.all_services:
            raise ValueError("an import of storage only has no rows of the whole bill")
        self._tag_sets()
        self._lookup_tables()
        con = self.con
        con.execute("DROP TABLE IF EXISTS billing_rows")
        # kept in `row_key` order, read in that order without a sort of its own at write time; the
        # sort within less memory than the scan had, so that the two peaks do not add up
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        con.execute("SET preserve_insertion_order = true")
        con.execute(f"SET memory_limit = '{BILL_SORT_MEMORY}'")
        try:
            # a table of the database, not TEMP: each reader's cursor is a connection of its own
            con.execute(f"CREATE TABLE billing_rows AS {self._costs_sql(billing=True)}", [source])
        except (duckdb.ConversionException, duckdb.OutOfRangeException) as error:
            raise self._sum_out_of_range(source, billing=True) or error from None
        finally:
            con.execute("RESET preserve_insertion_order")
            con.execute(f"SET memory_limit = '{limit}'")
        # every count was taken: the charges are no longer needed, their memory serves the write
        con.execute("DROP TABLE charges")
        con.execute("DROP TABLE tag_sets")
        return BillingRows(self)

    def _fetch(self, source: str, row_type: type, billing: bool) -> list:
        import duckdb

        self._lookup_tables()
        try:
            cursor = self.con.execute(self._costs_sql(billing=billing), [source])
            costs: list = []
            while batch := cursor.fetchmany(50_000):  # one copy of the rows in memory at a time
                costs.extend(map(row_type._make, batch))
        except (duckdb.ConversionException, duckdb.OutOfRangeException) as error:
            raise self._sum_out_of_range(source, billing) or error from None
        return costs

    def _tag_sets(self) -> None:
        """Each distinct tag text once: its canonical JSON (keys sorted; NULL when no tag has a
        value) and the OpenLineage run id it holds."""
        keys = ", ".join(focus.sql_text(key) for key in RUN_ID_TAG_KEYS)
        self.con.execute(f"""
CREATE OR REPLACE TEMP TABLE tag_sets AS
WITH parsed AS (
  SELECT raw, tag_entries(raw) AS entries
  FROM (SELECT DISTINCT tags AS raw FROM charges WHERE skip IS NULL AND tags IS NOT NULL)
)
SELECT raw,
  CASE WHEN len(entries) > 0 THEN CAST(to_json(map_from_entries(list_sort(list_distinct(entries)))) AS VARCHAR) END
    AS tags,
  left(list_filter(entries, lambda e: lower(e.key) IN ({keys}))[1].value, {LEDGER_TEXT_SIZES["tagged_run_id"]})
    AS run_id
FROM parsed
""")

    def _sum_out_of_range(self, source: str, billing: bool = False) -> BillingDataError | None:
        """The first ledger row whose sums do not fit the ledger's BIGINT columns (the slow path)."""
        limits = " OR ".join(
            f"abs({name}) > {MAX_AMOUNT}"
            for name in ("amount_nanos", "effective_nanos", "list_nanos", "credit_nanos", "correction_nanos")
        )
        if not billing:
            limits += f" OR storage_bytes >= {2.0**63}"
        cursor = self.con.execute(
            f"SELECT * FROM ({self._costs_sql(raw=True, billing=billing)}) WHERE {limits} LIMIT 1",
            [source],
        )
        found = cursor.fetchone()
        if found is None:
            return None
        cost = dict(zip([d[0] for d in cursor.description], found, strict=True))
        files = [self.labels[index] for index in sorted(cost["files"])]
        label = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        origin = self.origins[min(cost["files"])]
        what = (
            f"{cost['resource_id'] or 'no resource'} on {cost['day']} ({cost['sku']}, {cost['usage_class']})"
        )
        for name, column in (
            ("amount_nanos", focus.BILLED_COST),
            ("effective_nanos", focus.EFFECTIVE_COST),
            ("list_nanos", focus.LIST_COST),
            ("credit_nanos", focus.BILLED_COST),
            ("correction_nanos", focus.BILLED_COST),
        ):
            if cost[name] is not None and abs(cost[name]) > MAX_AMOUNT:
                return BillingDataError(
                    label,
                    f"the charges of {what} sum to {cost[name]:,} {cost['currency']}, out of range: the "
                    f"ledger keeps amounts of at most ±{MAX_AMOUNT:,} (nano-units in a signed 64-bit integer)",
                    column=origin.get(column, column),
                )
        column = origin.get(focus.CONSUMED_QUANTITY, focus.CONSUMED_QUANTITY)
        return BillingDataError(
            label,
            f"the storage of {what} stands for {cost['storage_bytes']:.3g} bytes, more than the ledger "
            f"counts (2^63 - 1): is the quantity really in {cost['unit']}?",
            column=column,
        )

    def _costs_sql(self, raw: bool = False, billing: bool = False) -> str:
        """The ledger rows' SELECT: storage rows, or (`billing`) the rows of the whole bill; `raw`:
        the sums before they are cast to the ledger's integers, and the files each comes from."""

        def nanos(expression: str) -> str:
            if raw:
                return f"round_even({expression}, 9)"
            return f"CAST(round_even({expression}, 9) * 1000000000 AS BIGINT)"

        def fit(expression: str, column: str) -> str:
            # an over-long value keeps its start and a digest of the whole, so two long ids stay distinct
            size = LEDGER_TEXT_SIZES[column]
            return (
                f"CASE WHEN length({expression}) > {size} THEN left({expression}, {size - 17}) || '~' || "
                f"left(sha256({expression}), 16) ELSE {expression} END"
            )

        usage = f"c.charge_category = '{focus.USAGE}'"
        # a quantity is kept only when all of it is in one unit
        one_unit = (
            f"min(c.unit) FILTER (WHERE {usage} AND c.quantity IS NOT NULL) = "
            f"max(c.unit) FILTER (WHERE {usage} AND c.quantity IS NOT NULL)"
        )
        days_factor = (
            "CASE u.period WHEN 'month' THEN dayofmonth(last_day(c.day)) WHEN 'second' THEN 1.0 / 86400 "
            "WHEN 'hour' THEN 1.0 / 24 ELSE 1 END"
        )
        storage_bytes = (
            f"round(sum(CAST(c.quantity AS DOUBLE) * u.bytes_per_unit * {days_factor}) "
            f"FILTER (WHERE {usage} AND c.usage_class = '{focus.STORAGE}'))"
        )
        if not raw:
            storage_bytes = f"CAST({storage_bytes} AS BIGINT)"
        resource = (
            "CASE WHEN c.provider_name = 'azure' THEN lower(COALESCE(c.resource_id, '')) "
            "ELSE COALESCE(c.resource_id, '') END"
        )
        classes = """
  ON k.hint IS NOT DISTINCT FROM COALESCE(c.usage_type, c.sku_id)
  AND k.unit IS NOT DISTINCT FROM c.unit
  AND k.charge_category IS NOT DISTINCT FROM c.charge_category"""
        key = {
            "provider": fit("c.provider_name", "provider"),
            "billing_account": fit("COALESCE(c.billing_account, '')", "billing_account"),
            "day": "c.day",
        }
        if billing:
            key["usage_hour"] = "c.usage_hour"
            key["service"] = fit("COALESCE(c.service, '')", "service")
        key |= {
            "resource_id": fit(resource, "resource_id"),
            "sku": fit("COALESCE(c.sku_id, c.usage_type, '')", "sku"),
            "usage_class": "c.usage_class",
            "currency": "c.currency",
        }
        measures = {
            "amount_nanos": nanos("sum(c.billed)"),
            "effective_nanos": nanos("sum(c.effective)"),
            "list_nanos": nanos("sum(c.list_cost)"),
            "credit_nanos": nanos(
                f"COALESCE(sum(c.billed) FILTER (WHERE c.charge_category = '{focus.CREDIT}'), 0)"
            ),
            "correction_nanos": nanos(
                f"COALESCE(sum(c.billed) FILTER (WHERE c.charge_class = '{focus.CORRECTION}'), 0)"
            ),
            "quantity": f"CASE WHEN {one_unit} THEN CAST(sum(c.quantity) FILTER (WHERE {usage}) AS VARCHAR) END",
            "unit": f"CASE WHEN {one_unit} THEN "
            + fit(f"min(c.unit) FILTER (WHERE {usage} AND c.quantity IS NOT NULL)", "unit")
            + " END",
        }
        if not billing:
            measures["storage_bytes"] = storage_bytes
        measures |= {
            "usage_type": fit("any_value(c.usage_type)", "usage_type"),
        }
        if not billing:
            measures["service"] = fit("any_value(c.service)", "service")
        measures["region"] = fit("any_value(c.region)", "region")
        if billing:
            measures |= {"tags": "t.tags", "tagged_run_id": "t.run_id"}
        measures |= {"source_rows": "CAST(sum(c.rows) AS INTEGER)", "source": "?"}
        if raw:
            measures["files"] = "list(DISTINCT c.file_index)"
        columns = ",\n  ".join(f"{expression} AS {name}" for name, expression in {**key, **measures}.items())
        joins = "LEFT JOIN storage_units AS u ON u.unit = c.unit"
        if billing:
            joins = "LEFT JOIN tag_sets AS t ON t.raw = c.tags"
        # a credit takes the usage class of the usage it credits, where its SKU says which
        rows = f"""
WITH sku_classes AS (
  SELECT c.sku_id, min(k.usage_class) AS usage_class
  FROM charges AS c JOIN usage_classes AS k {classes}
  WHERE c.skip IS NULL AND c.charge_category = '{focus.USAGE}' AND c.sku_id IS NOT NULL
  GROUP BY c.sku_id
),
classified AS (
  SELECT c.*, p.provider AS provider_name,
    CASE WHEN c.charge_category = '{focus.CREDIT}' AND s.usage_class IS NOT NULL THEN s.usage_class
      ELSE k.usage_class END AS usage_class
  FROM charges AS c
  JOIN providers AS p ON p.raw IS NOT DISTINCT FROM c.provider
  JOIN usage_classes AS k {classes}
  LEFT JOIN sku_classes AS s ON s.sku_id = c.sku_id
  WHERE c.skip IS NULL{"" if billing else " AND c.is_storage"}
)
SELECT {columns}
FROM classified AS c
{joins}
GROUP BY ALL
"""
        if not billing:
            return rows
        # as `row_key`: an hourly row's day with its hour, a day-level row's key as it always was
        moment = "CAST(day AS VARCHAR) || COALESCE('T' || lpad(CAST(usage_hour AS VARCHAR), 2, '0'), '')"
        digest = ", ".join(
            (moment, *(name for name in key if name not in ("day", "usage_hour")), "COALESCE(tags, '')")
        )
        # in key order: a database inserts them into its unique index of digests page by page
        return f"SELECT sha256(concat_ws(chr(31), {digest})) AS row_key, * FROM ({rows}) AS costs ORDER BY row_key"


class BillingRows:
    """The rows of a whole-bill import, in the DuckDB table `billing_rows` of their ChargeTable until
    closed: a bill of millions of hourly rows is handed to the ledger a batch at a time, never held
    in Python all at once. Iterating gives BillingCost in `row_key` order; each iteration is a
    cursor of its own, so they may nest. The table is closed by `close()` or when they are freed."""

    BATCH = 50_000

    def __init__(self, table: ChargeTable) -> None:
        self._table = table
        self._count = table.con.execute("SELECT count(*) FROM billing_rows").fetchone()[0]

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"BillingRows({self._count:,} rows{'' if self._table else ', closed'})"

    def __iter__(self) -> Iterator[BillingCost]:
        for batch in self.batches():
            yield from batch

    def __del__(self) -> None:
        self.close()

    def batches(self, size: int | None = None) -> Iterator[list[BillingCost]]:
        """The rows, `size` (default BATCH) at a time."""
        if self._table is None:
            raise ValueError("the rows of this bill were closed")
        cursor = self._table.con.cursor()
        try:
            # in key order, as stored: a database inserts them into its unique index page by page
            cursor.execute("SET preserve_insertion_order = true")
            cursor.execute("SELECT * FROM billing_rows")
            while batch := cursor.fetchmany(size or self.BATCH):
                yield list(map(BillingCost._make, batch))
        finally:
            cursor.close()

    def totals(self) -> dict[str, int]:
        """The amount per currency in nano-units, exact (DuckDB sums BIGINT into HUGEINT)."""
        found = self._table.con.execute(
            "SELECT currency, sum(amount_nanos) FROM billing_rows GROUP BY currency ORDER BY currency"
        ).fetchall()
        return {currency: int(total) for currency, total in found}

    def days(self) -> set[dt.date]:
        return {row[0] for row in self._table.con.execute("SELECT DISTINCT day FROM billing_rows").fetchall()}

    def days_by_account(self) -> dict[tuple[str, str], set[dt.date]]:
        """The days of each provider and billing account the rows hold (what `replace_days` deletes)."""
        found: dict[tuple[str, str], set[dt.date]] = {}
        for provider, account, day in self._table.con.execute(
            "SELECT DISTINCT provider, billing_account, day FROM billing_rows"
        ).fetchall():
            found.setdefault((provider, account), set()).add(day)
        return found

    def close(self) -> None:
        table = getattr(self, "_table", None)
        if table is not None:
            self._table = None
            table.close()


def _provider(value: str | None) -> str:
    return focus.provider_of(value) or (value or "unknown").strip().lower()


def _row_values(con, normalised: Normalised, row: int) -> dict[str, Any]:
    cursor = con.execute(f"SELECT * FROM ({normalised.sql}) AS normalised WHERE {ROW} = ? LIMIT 1", [row])
    names = [d[0] for d in cursor.description]
    values = cursor.fetchone()
    return dict(zip(names, values, strict=True)) if values else {}


def _number_problem(name: str, value: Any) -> str | None:
    """Why a value DuckDB would not take as DECIMAL(38,12), or the ledger could not store, is wrong
    (None: it is a number in range, DuckDB's refusal is its own)."""
    shown = repr(str(value)[:80])
    text = str(value).strip()
    if re.fullmatch(r"[+-]?(s?nan|1\.#(qnan|ind))", text, re.IGNORECASE):
        return f"{shown} is not a number (NaN)"
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if number.is_nan():
        return f"{shown} is not a number (NaN)"
    if number.is_infinite():
        return f"{shown} is not a finite number"
    if name in AMOUNTS and abs(number) > MAX_AMOUNT:
        return (
            f"{shown} is out of range: the ledger keeps amounts of at most ±{MAX_AMOUNT:,} "
            "(nano-units in a signed 64-bit integer)"
        )
    if abs(number) >= MAX_QUANTITY:
        return f"{shown} is out of range: at most 26 digits before the decimal point"
    return None


def explain_row(con, normalised: Normalised, label: str, row: int) -> BillingDataError:
    """Which column of this row is malformed, and why (the slow path: one row)."""
    values = _row_values(con, normalised, row)
    parsed: dict[str, Any] = {}
    for name in (*REQUIRED, *VALUE_TYPES):
        value = values.get(name)
        column = normalised.origin.get(name, name)
        if value is None:
            if name in REQUIRED:
                return BillingDataError(label, "a value is required", row=row + 1, column=column)
            continue
        if name in VALUE_TYPES:
            parsed[name] = con.execute(f"SELECT TRY_CAST(? AS {VALUE_TYPES[name]})", [value]).fetchone()[0]
            problem = None
            if VALUE_TYPES[name] != DECIMAL:
                problem = None if parsed[name] is not None else f"{str(value)[:80]!r} is not a date-time"
            elif parsed[name] is None:
                problem = _number_problem(name, value) or f"{str(value)[:80]!r} is not a number"
            elif name in AMOUNTS and abs(parsed[name]) > MAX_AMOUNT:
                problem = _number_problem(name, value)
            if problem:
                return BillingDataError(label, problem, row=row + 1, column=column)
    start, end = parsed.get(focus.CHARGE_PERIOD_START), parsed.get(focus.CHARGE_PERIOD_END)
    if start is not None and end is not None and end < start:
        names = [normalised.origin.get(n, n) for n in (focus.CHARGE_PERIOD_END, focus.CHARGE_PERIOD_START)]
        return BillingDataError(
            label,
            f"the charge period ends before it starts: {names[0]} {_shown(values[focus.CHARGE_PERIOD_END])} "
            f"is before {names[1]} {_shown(values[focus.CHARGE_PERIOD_START])}",
            row=row + 1,
            column=names[0],
        )
    return BillingDataError(label, "the row cannot be read", row=row + 1)


def _shown(value: Any) -> str:
    """A value as the file holds it: text as it is written, a date-time in ISO 8601."""
    if isinstance(value, dt.datetime):
        return repr(value.isoformat())
    return repr(str(value)[:80])


def _currency_error(con, normalised: Normalised, label: str, currency: str) -> BillingDataError:
    found = con.execute(
        f"SELECT min({ROW}) FROM ({normalised.sql}) AS normalised WHERE {quote(focus.BILLING_CURRENCY)} = ?",
        [currency],
    ).fetchone()[0]
    return BillingDataError(
        label,
        f"{currency[:20]!r} is not an ISO 4217 currency code",
        row=None if found is None else found + 1,
        column=normalised.origin.get(focus.BILLING_CURRENCY, focus.BILLING_CURRENCY),
    )
