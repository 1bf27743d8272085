"""A malformed file or row fails its import with an error naming the file, the row and the column,
and writes nothing for that import."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from airflow_cost_provider.billing import samples
from airflow_cost_provider.billing.errors import BillingDataError
from airflow_cost_provider.billing.files import fetched
from airflow_cost_provider.billing.importer import read_files
from airflow_cost_provider.billing.registry import file_format
from airflow_cost_provider.cli import main
from tests.support.airflow_env import ledger_rows

CHARGES = samples.sample_charges(dt.date(2026, 2, 1), 2)
OUT_OF_RANGE = (
    "is out of range: the ledger keeps amounts of at most ±9,223,372,036.854775807 "
    "(nano-units in a signed 64-bit integer)"
)


def focus_rows(tmp_path) -> tuple[list[str], list[dict[str, str]]]:
    path = samples.write_focus(CHARGES, tmp_path / "source.csv")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def write_csv(path, header, rows, gzip_it=False):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if gzip_it:
        with gzip.open(path, "wt", newline="") as handle:
            handle.write(buffer.getvalue())
    else:
        path.write_text(buffer.getvalue())
    return path


def import_error(path, name="focus") -> BillingDataError:
    fmt = file_format(name)
    with fetched([str(path)], fmt.accepts) as files, pytest.raises(BillingDataError) as caught:
        read_files(fmt, files)
    return caught.value


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("BilledCost", "12,5 €", "'12,5 €' is not a number"),
        ("ConsumedQuantity", "lots", "'lots' is not a number"),
        ("ChargePeriodStart", "yesterday", "'yesterday' is not a date-time"),
        ("ChargePeriodEnd", "2026-02-31T00:00:00Z", "'2026-02-31T00:00:00Z' is not a date-time"),
        ("BilledCost", "", "a value is required"),
        ("BillingCurrency", "", "a value is required"),
        ("BilledCost", "NaN", "'NaN' is not a number (NaN)"),
        ("EffectiveCost", "-nan", "'-nan' is not a number (NaN)"),
        ("ConsumedQuantity", "nan", "'nan' is not a number (NaN)"),
        ("BilledCost", "1e30", f"'1e30' {OUT_OF_RANGE}"),
        ("ListCost", "-9300000000", f"'-9300000000' {OUT_OF_RANGE}"),
        ("BilledCost", "inf", "'inf' is not a finite number"),
        ("ConsumedQuantity", "1e30", "'1e30' is out of range: at most 26 digits before the decimal point"),
    ],
)
def test_a_bad_value_names_the_file_row_and_column(tmp_path, column, value, problem):
    header, rows = focus_rows(tmp_path)
    index = 17  # a storage row or another service's: every row must be well formed
    rows[index][column] = value
    path = write_csv(tmp_path / "bad.csv", header, rows)
    error = import_error(path)
    assert (error.file, error.row, error.column) == (str(path), index + 1, column)
    assert str(error) == f"{path}, row {index + 1}, column {column}: {problem}"


def test_the_first_bad_row_is_named_when_there_are_several(tmp_path):
    header, rows = focus_rows(tmp_path)
    rows[40]["BilledCost"] = "x"
    rows[9]["ChargePeriodStart"] = "y"
    error = import_error(write_csv(tmp_path / "bad.csv", header, rows))
    assert (error.row, error.column) == (10, "ChargePeriodStart")


def test_a_missing_required_column_is_named(tmp_path):
    header, rows = focus_rows(tmp_path)
    header.remove("BillingCurrency")
    for row in rows:
        del row["BillingCurrency"]
    error = import_error(write_csv(tmp_path / "bad.csv", header, rows))
    assert error.column == "BillingCurrency" and error.row is None
    assert "missing required column" in str(error)


def test_a_currency_that_is_not_iso_4217(tmp_path):
    header, rows = focus_rows(tmp_path)
    for row in rows[30:]:
        if row["ServiceName"] == "Cloud Storage":
            row["BillingCurrency"] = "US$"
    error = import_error(write_csv(tmp_path / "bad.csv", header, rows))
    assert error.column == "BillingCurrency" and error.row is not None and error.row > 30
    assert "ISO 4217" in str(error)


def test_a_row_with_too_many_fields(tmp_path):
    header, rows = focus_rows(tmp_path)
    path = write_csv(tmp_path / "bad.csv", header, rows)
    lines = path.read_text().splitlines()
    lines[6] += ",surplus"  # data row 6
    path.write_text("\n".join(lines) + "\n")
    error = import_error(path)
    assert error.row == 6
    assert f"expected {len(header)} columns, found {len(header) + 1}" in str(error)


def test_a_bad_cost_in_a_gzip_cur_names_the_cur_column(tmp_path):
    rows = samples.cur_rows(CHARGES)
    rows[3]["line_item_unblended_cost"] = "1.2.3"
    path = write_csv(tmp_path / "cur.csv.gz", list(samples.CUR_COLUMNS), rows, gzip_it=True)
    error = import_error(path, "aws-cur")
    assert (error.row, error.column) == (4, "line_item_unblended_cost")


def test_a_bad_value_in_a_parquet_file(tmp_path):
    header, rows = focus_rows(tmp_path)
    rows[25]["BilledCost"] = "n/a"
    table = pa.table({name: [row[name] or None for row in rows] for name in header})
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    error = import_error(path)
    assert (error.row, error.column) == (26, "BilledCost")


def test_a_missing_time_in_a_gcp_export_row(tmp_path):
    records = samples.gcp_export_records(CHARGES)
    records[5]["usage_start_time"] = None
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    error = import_error(path, "gcp-billing-export")
    assert (error.row, error.column) == (6, "usage_start_time")


def test_the_largest_amount_the_ledger_holds_is_imported(tmp_path):
    header, rows = focus_rows(tmp_path)
    rows[17]["BilledCost"] = "9223372036.854775807"
    path = write_csv(tmp_path / "max.csv", header, rows)
    fmt = file_format("focus")
    with fetched([str(path)], fmt.accepts) as files:
        collected = read_files(fmt, files)
    assert max(cost.amount_nanos for cost in collected.costs) > 9_223_372_036 * 10**9


@pytest.mark.parametrize(
    ("value", "problem"),
    [(float("nan"), "'nan' is not a number (NaN)"), (1e30, f"'1e+30' {OUT_OF_RANGE}")],
)
def test_a_nan_or_huge_double_cost_in_a_parquet_file(tmp_path, value, problem):
    header, rows = focus_rows(tmp_path)
    columns = {name: [row[name] or None for row in rows] for name in header}
    columns["BilledCost"] = [value if i == 25 else float(row["BilledCost"]) for i, row in enumerate(rows)]
    path = tmp_path / "costs.parquet"
    pq.write_table(pa.table(columns), path)
    error = import_error(path)
    assert str(error) == f"{path}, row 26, column BilledCost: {problem}"


def test_a_charge_period_that_ends_before_it_starts(tmp_path):
    header, rows = focus_rows(tmp_path)
    rows[40]["ChargePeriodEnd"] = "2026-01-31T00:00:00Z"
    start = rows[40]["ChargePeriodStart"]
    path = write_csv(tmp_path / "periods.csv", header, rows)
    assert str(import_error(path)) == (
        f"{path}, row 41, column ChargePeriodEnd: the charge period ends before it starts: "
        f"ChargePeriodEnd '2026-01-31T00:00:00Z' is before ChargePeriodStart '{start}'"
    )


def test_a_cur_line_item_that_ends_before_it_starts_names_the_cur_columns(tmp_path):
    rows = samples.cur_rows(CHARGES)
    start = rows[3]["line_item_usage_start_date"]
    rows[3]["line_item_usage_end_date"] = "2020-01-01T00:00:00Z"
    path = write_csv(tmp_path / "cur.csv.gz", list(samples.CUR_COLUMNS), rows, gzip_it=True)
    assert str(import_error(path, "aws-cur")) == (
        f"{path}, row 4, column line_item_usage_end_date: the charge period ends before it starts: "
        f"line_item_usage_end_date '2020-01-01T00:00:00Z' is before line_item_usage_start_date '{start}'"
    )


def test_costs_that_sum_beyond_the_ledger_name_the_charge(tmp_path):
    header, rows = focus_rows(tmp_path)
    index = next(
        i for i, r in enumerate(rows) if r["ResourceId"] == "acme-logs-eu" and r["ChargeCategory"] == "Usage"
    )
    rows[index]["BilledCost"] = "5000000000"
    rows.insert(index, dict(rows[index]))  # each in range, not their sum
    path = write_csv(tmp_path / "sums.csv", header, rows)
    error = import_error(path)
    assert (error.file, error.row, error.column) == (str(path), None, "BilledCost")
    assert str(error).startswith(f"{path}, column BilledCost: the charges of acme-logs-eu on 2026-02-01 (")
    assert str(error).endswith(f"sum to 10,000,000,000.000000000 USD, {OUT_OF_RANGE.removeprefix('is ')}")


def random_bytes(size=4096):
    return random.Random(7).randbytes(size)


def gzip_bytes(text):
    return gzip.compress(text.encode(), mtime=0)


# name -> (file name, its content from the sample FOCUS CSV's bytes, the message)
NOT_READABLE = {
    "CSV named .parquet": (
        "costs.parquet",
        lambda csv_bytes: csv_bytes,
        "not a Parquet file: it does not start with the Parquet marker PAR1 (it holds text: a CSV file?)",
    ),
    "random bytes named .parquet": (
        "costs.parquet",
        lambda _: random_bytes(),
        "not a Parquet file: it does not start with the Parquet marker PAR1 (it holds other binary data)",
    ),
    "empty .parquet": (
        "costs.parquet",
        lambda _: b"",
        "not a Parquet file: it does not start with the Parquet marker PAR1 (the file is empty)",
    ),
    "Parquet cut short": (
        "costs.parquet",
        lambda _: b"PAR1 but not really",
        "not a readable Parquet file: it does not end with the Parquet marker PAR1 (cut short?)",
    ),
    "random bytes named .csv": (
        "costs.csv",
        lambda _: random_bytes(),
        "not a CSV file: it holds binary data, not text",
    ),
    "random bytes named .csv.gz": (
        "costs.csv.gz",
        lambda _: random_bytes(),
        "not a CSV file: it holds binary data, not text (and it is not gzip-compressed)",
    ),
    "gzip of random bytes": (
        "costs.csv.gz",
        lambda _: gzip.compress(random_bytes(), mtime=0),
        "not a CSV file: it holds binary data, not text",
    ),
    "gzip cut short": (
        "costs.csv.gz",
        lambda csv_bytes: gzip.compress(csv_bytes, mtime=0)[:2000],
        "not a readable gzip file: it ends before its end-of-stream marker (cut short?)",
    ),
    "gzip of an unknown method": (
        "costs.csv.gz",
        lambda csv_bytes: b"\x1f\x8b\x07" + gzip.compress(csv_bytes, mtime=0)[3:],
        "not a readable gzip file: Unknown compression method",
    ),
    "UTF-16 CSV": (
        "costs.csv",
        lambda csv_bytes: csv_bytes.decode().encode("utf-16"),
        "not UTF-8 text: it is UTF-16 (export or save it as UTF-8 CSV)",
    ),
}


def not_readable(tmp_path, case):
    name, content, problem = NOT_READABLE[case]
    source = samples.write_focus(CHARGES, tmp_path / "source.csv").read_bytes()
    path = tmp_path / "bad" / name
    path.parent.mkdir()
    path.write_bytes(content(source))
    return path, problem


@pytest.mark.parametrize("case", NOT_READABLE)
def test_a_file_that_is_not_what_its_name_says(tmp_path, case):
    path, problem = not_readable(tmp_path, case)
    error = import_error(path)
    assert (error.file, error.row, error.column) == (str(path), None, None)
    assert str(error) == f"{path}: {problem}"


def test_a_parquet_file_damaged_inside(tmp_path):
    path = samples.write_focus(CHARGES, tmp_path / "costs.parquet", "parquet")
    data = bytearray(path.read_bytes())
    noise = random.Random(0)
    for index in range(8, len(data) // 2):  # the column chunks; the markers and the footer are whole
        data[index] = noise.randrange(256)
    path.write_bytes(data)
    error = import_error(path)
    assert (error.file, error.row, error.column) == (str(path), None, None)
    assert str(error).startswith(f"{path}: not a readable Parquet file: it is damaged (")  # DuckDB's reason


def test_a_byte_that_is_not_utf8_names_the_row_and_column(tmp_path):
    header, rows = focus_rows(tmp_path)
    path = write_csv(tmp_path / "latin1.csv", header, rows)
    lines = path.read_bytes().split(b"\n")
    lines[30] = lines[30].replace(b",Usage,", b",Us\xe9ge,", 1)  # data row 30, a Windows-1252 é
    path.write_bytes(b"\n".join(lines))
    error = import_error(path)
    assert str(error) == (
        f"{path}, row 30, column ChargeCategory: byte 0xe9 is not UTF-8 text (in 'Us\\xe9ge'): "
        "export the file as UTF-8"
    )


def large_csv(tmp_path, copies=400) -> tuple[bytes, bytes]:
    """The sample's header and its rows `copies` times: 30 MB, beyond the reader's first block of
    16 MiB, so that its errors surface while DuckDB reads the stream."""
    header, body = samples.write_focus(CHARGES, tmp_path / "one.csv").read_bytes().split(b"\n", 1)
    return header + b"\n", body * copies


def test_errors_deep_in_a_large_csv_are_the_files_not_duckdbs(tmp_path):
    header, body = large_csv(tmp_path)
    surplus = tmp_path / "surplus.csv"
    surplus.write_bytes(header + body.rstrip(b"\n") + b",surplus\n")
    rows = body.count(b"\n")
    assert str(import_error(surplus)) == f"{surplus}, row {rows}: expected 44 columns, found 45"
    # cut short: pyarrow may meet the end in its read-ahead or while DuckDB reads: the same message
    cut = tmp_path / "cut.csv.gz"
    compressed = gzip.compress(header + body, compresslevel=1, mtime=0)
    cut.write_bytes(compressed[: len(compressed) * 9 // 10])
    assert str(import_error(cut)) == (
        f"{cut}: not a readable gzip file: it ends before its end-of-stream marker (cut short?)"
    )


def snapshot(url):
    return (
        ledger_rows(url, "SELECT * FROM cost_storage_costs ORDER BY id"),
        ledger_rows(url, "SELECT id, source, rows_read FROM cost_storage_imports ORDER BY id"),
    )


def test_an_import_with_one_bad_file_writes_nothing(tmp_path, capsys):
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    good = samples.write_focus(CHARGES, tmp_path / "good.csv")
    assert main(["import-storage", "--format", "focus", "--path", str(good), "--ledger", ledger]) == 0
    before = snapshot(ledger)
    assert before[0] and len(before[1]) == 1

    restated = samples.write_focus(
        samples.sample_charges(dt.date(2026, 2, 1), 2, version=2), tmp_path / "v2.csv"
    )
    header, rows = focus_rows(tmp_path)
    rows[-1]["ChargePeriodStart"] = "02/02/2026"
    bad = write_csv(tmp_path / "zz-bad.csv", header, rows)
    code = main(
        [
            "import-storage",
            "--format",
            "focus",
            "--path",
            str(restated),
            "--path",
            str(bad),
            "--ledger",
            ledger,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"{bad}, row {len(rows)}, column ChargePeriodStart" in err and "nothing was imported" in err
    assert snapshot(ledger) == before  # the restated good file was not applied either


BAD_ROWS = {
    "NaN cost": ("BilledCost", "NaN", "'NaN' is not a number (NaN)"),
    "huge cost": ("BilledCost", "1e30", f"'1e30' {OUT_OF_RANGE}"),
    "period ending before it starts": (
        "ChargePeriodEnd",
        "2026-01-01T00:00:00Z",
        "the charge period ends before it starts: ChargePeriodEnd '2026-01-01T00:00:00Z' is before "
        "ChargePeriodStart '2026-02-02T00:00:00Z'",
    ),
}


@pytest.mark.parametrize("case", [*BAD_ROWS, *NOT_READABLE])
def test_the_cli_says_what_is_wrong_in_one_line_and_writes_nothing(tmp_path, capsys, case):
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    good = samples.write_focus(CHARGES, tmp_path / "good.csv")
    assert main(["import-storage", "--format", "focus", "--path", str(good), "--ledger", ledger]) == 0
    before = snapshot(ledger)
    if case in BAD_ROWS:
        column, value, problem = BAD_ROWS[case]
        header, rows = focus_rows(tmp_path)
        row = len(rows)  # the last row, of 2026-02-02
        rows[-1][column] = value
        bad = write_csv(tmp_path / "zz-bad.csv", header, rows)
        expected = f"{bad}, row {row}, column {column}: {problem}"
    else:
        bad, problem = not_readable(tmp_path, case)
        expected = f"{bad}: {problem}"
    restated = samples.write_focus(
        samples.sample_charges(dt.date(2026, 2, 1), 2, version=2), tmp_path / "v2.csv"
    )
    capsys.readouterr()
    code = main(
        [
            "import-storage",
            "--format",
            "focus",
            "--path",
            str(restated),
            "--path",
            str(bad),
            "--ledger",
            ledger,
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.strip().endswith(f"error: {expected} (nothing was imported)")
    assert snapshot(ledger) == before


def test_a_failure_while_writing_rolls_the_whole_import_back(tmp_path, monkeypatch):
    from airflow_cost_provider.billing.importer import save
    from airflow_cost_provider.ledger import store

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = store.get_engine(url)
    fmt = file_format("focus")
    with fetched([str(samples.write_focus(CHARGES, tmp_path / "f.csv"))], fmt.accepts) as files:
        collected = read_files(fmt, files)
    real = store._bulk_upsert

    def fail_after_insert(conn, *args, **kwargs):
        real(conn, *args, **kwargs)
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(store, "_bulk_upsert", fail_after_insert)
    with pytest.raises(sa.exc.OperationalError):
        save(engine, collected, watermark_key="focus:f.csv")
    assert snapshot(url) == ([], [])
    assert ledger_rows(url, "SELECT * FROM cost_storage_watermarks") == []
