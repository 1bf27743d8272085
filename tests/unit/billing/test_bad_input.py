"""A malformed file or row fails its import with an error naming the file, the row and the column,
and writes nothing for that import."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json

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


def test_not_a_billing_file(tmp_path):
    path = tmp_path / "notes.parquet"
    path.write_text("PAR1 but not really")
    assert "not a readable Parquet file" in str(import_error(path))


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
